"""The same pipeline, gate, promotion, rollback and ledger against a real
`mlflow server` on a loopback port, over HTTP."""

import os
import subprocess
import sys

import pytest

from keel.errors import PromotionError
from keel.registry.promotion import Registry, promote, rollback, status

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_pipeline_promotion_and_ledger_over_http(tmp_path, mlflow_server):
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace
    from tasks.lineage import load_lineage

    ws = init_workspace(tmp_path / "ws")
    env = {"KEEL_MLFLOW__TRACKING_URI": mlflow_server.url}
    s = load_settings(ws, profile="test", environ=env)
    assert s.mlflow.registry_uri == mlflow_server.url and s.mlflow.artifact_root == ""
    ingest_flow(s, ["2013-01"])
    v1 = train_flow(s)
    v2 = train_flow(s.with_overrides({"promotion.policy": "review", "train.lr": 0.01}))
    assert v1.aliases == ["challenger", "champion"] and "awaiting review" in v2.decision
    assert v1.model_uri.startswith("models:/")
    # artifacts went through the server, not into the workspace
    assert not (ws / "mlflow" / "artifacts").exists()
    assert any((mlflow_server.root / "artifacts").rglob("MLmodel"))

    entry = promote(s.mlflow_store, s.promotion, "2", reviewer="dana", reason="reviewed over HTTP")
    assert entry.to_version == "2" and entry.evidence["servability"]["ok"]
    back = rollback(s.mlflow_store, s.promotion, reason="back to v1", actor="dana")
    assert back.to_version == "1"
    assert [e.action for e in Registry(s.mlflow_store, s.promotion).ledger()] == [
        "initial",
        "promote",
        "rollback",
    ]
    assert status(s.mlflow_store, s.promotion)["champion"]["version"] == "1"
    assert load_lineage.fn(s.mlflow_store, s.data_store, "2").data_version == v1_data(s)

    # another machine sharing the server sees the same history, through the CLI
    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(ws), "-p", "test", "history"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rollback" in proc.stdout and "by dana: back to v1" in proc.stdout

    mlflow_server.stop()  # the server goes down: clear error, nothing moves
    with pytest.raises(PromotionError, match=rf"{mlflow_server.url}.*not reachable"):
        promote(s.mlflow_store, s.promotion, "2", reviewer="dana", reason="r")
    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(ws), "-p", "test", "rollback", "--reason", "x"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    # the command checks its backends before any work: exit 2, the setting and the address
    assert proc.returncode == 2, proc.stderr
    assert f"mlflow.tracking_uri = {mlflow_server.url}: cannot reach the MLflow server" in proc.stderr
    mlflow_server.start()
    assert Registry(s.mlflow_store, s.promotion).alias("champion") == "1"


def v1_data(settings) -> str:
    from keel.data.workspace import read_data_version

    return read_data_version(settings.dvc_file).md5
