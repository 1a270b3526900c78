"""Two processes opening a new sqlite MLflow store at once: keel's client creates it under
a file lock, so neither sees a half-migrated schema. Real processes, a real sqlite store."""

import subprocess
import sys

import pytest

from keel.registry import tracking

OPEN = """
import sys

import pytest
from keel.config.settings import load_settings
from keel.registry import tracking
s = load_settings(sys.argv[1], profile="test", environ={})
tracking.ensure_experiment(s.mlflow_store)
print(tracking.client(s.mlflow_store).search_registered_models())
"""


@pytest.mark.integration
def test_concurrent_first_opens_of_a_new_sqlite_store_both_succeed(synthetic):
    workspace = synthetic
    db = tracking._sqlite_path(workspace.mlflow.tracking_uri)
    assert db is not None and not db.exists()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN, str(workspace.workspace)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=300), p.communicate()) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0, 0], [err[-2000:] for _, (_, err) in results]
    assert db.exists() and (db.parent / f"{db.name}.lock").exists()
    assert [exp.name for exp in tracking.client(workspace.mlflow_store).search_experiments()].count(
        workspace.mlflow.experiment
    ) == 1
