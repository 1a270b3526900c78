"""A team's model that cannot work stops `keel train` before any MLflow run opens: a target
that does not import, a class that is not a model family, a bad param, a preprocessing that
returns the wrong shape, a network whose output width does not match the objective. Each is
one line naming the key or the class, exit 2; nothing is registered, no run is opened, and
the champion stays where it was. The bad families live in a package the test writes (the
synthetic workload's binary objective: one output)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BAD = textwrap.dedent(
    '''
    """Families a team might get wrong."""
    import numpy as np
    from torch import nn

    from keel.model.families import Family, FamilyParams


    class NotAModel:
        """A class keel cannot train."""


    class Columns:
        def __init__(self, columns):
            self.columns = list(columns)

        def transform(self, frame):
            x = frame[self.columns].to_numpy(dtype=np.float32, na_value=0.0)
            return np.zeros((len(frame), 0), dtype=np.int64), x

        def to_dict(self):
            return {"columns": self.columns}


    class OneArray(Columns):
        def transform(self, frame):
            return super().transform(frame)[1]  # keel's two inputs are (codes, numbers)


    class Linear(nn.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.fc = nn.Linear(n_in, n_out)

        def forward(self, codes, x):
            return self.fc(x)


    class Params(FamilyParams):
        extra: int = 2


    class WrongShape(Family):
        name = "wrong-shape"

        def fit_preprocessor(self, frame, features):
            return OneArray(features.numeric)

        def load_preprocessor(self, data):
            return OneArray(data["columns"])

        def network(self, outputs, preprocessor):
            return Linear(len(preprocessor.columns), outputs)


    class WrongWidth(Family):
        name = "wrong-width"
        Params = Params

        def fit_preprocessor(self, frame, features):
            return Columns(features.numeric)

        def load_preprocessor(self, data):
            return Columns(data["columns"])

        def network(self, outputs, preprocessor):
            return Linear(len(preprocessor.columns), outputs + self.params.extra)
    '''
)

CASES = {
    "does-not-import": ('target = "no_such_team.model:Net"', "model.target 'no_such_team.model:Net'"),
    "not-a-model": ('target = "bad_families:NotAModel"', "is not a keel.model.families.Family subclass"),
    "bad-param": (
        'target = "bad_families:WrongWidth"\nparams = { extar = 1 }',
        "model.params.extar: Extra inputs are not permitted",
    ),
    "wrong-shape": (
        'target = "bad_families:WrongShape"',
        "(bad_families:WrongShape): its preprocessing's transform() must return two arrays",
    ),
    "wrong-width": (
        'target = "bad_families:WrongWidth"',
        "(bad_families:WrongWidth): its network answers shape (4, 3) for 4 rows; "
        "the binary objective needs (4,)",
    ),
}


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A synthetic workspace with a champion (v1, keel's MLP) and the bad package beside it."""
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace

    root = tmp_path_factory.mktemp("own-model-errors")
    (root / "pkg").mkdir()
    (root / "pkg" / "bad_families.py").write_text(BAD)
    toml = '[workload]\nname = "synthetic"\n'
    settings = load_settings(init_workspace(root / "ws", toml), profile="test", environ={})
    ingest_flow(settings, ["b01", "b02"])
    assert train_flow(settings).aliases == ["challenger", "champion"]
    return settings, root / "pkg", toml


def _state(settings):
    from keel.registry import tracking

    client = tracking.client(settings.mlflow_store)
    versions = client.search_model_versions(f"name = '{settings.mlflow.model_name}'")
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id])
    return len(versions), len(runs), tracking.current_alias_version(settings.mlflow_store, "champion")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_model_that_cannot_work_stops_train_before_any_run_with_one_line(champion, case):
    settings, pkg, toml = champion
    model, needle = CASES[case]
    before = _state(settings)
    assert before[2] == "1"
    keel_toml = settings.workspace / "keel.toml"
    keel_toml.write_text(f"{toml}\n[model]\n{model}\n")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "keel.cli", "-w", str(settings.workspace), "-p", "test", "train"],
            env={**os.environ, "PYTHONPATH": str(pkg)},
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        keel_toml.write_text(toml)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _state(settings) == before  # no version, no run, the champion untouched
