"""The drift monitor against the champion's training data (the session's shared Prefect
server, sqlite MLflow)."""

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_shifted_batch_drifts_unshifted_does_not_and_scores_are_logged(ws, tmp_path):
    from flows.drift import drift_flow
    from keel.registry.tracking import client

    ws = ws.with_overrides({"drift.share_threshold": 0.3})  # the 2 shifted features below are 1/3
    same = drift_flow(ws, ["b01"])  # the champion trained on this very batch
    assert same is not None and same.share == 0.0 and not same.drifted
    frame = pd.read_parquet(ws.data.dir / "b01.parquet")
    hot = frame.assign(x1=frame["x1"] + 3.0, x3=frame["x3"] / 3)
    path = tmp_path / "heatwave.parquet"
    hot.to_parquet(path)
    shifted = drift_flow(ws, [], {"heatwave": path})
    assert shifted.drifted and shifted.share >= ws.drift.share_threshold
    assert {f.feature for f in shifted.features if f.drifted} == {"x1", "x3"}
    c = client(ws.mlflow_store)
    exp = c.get_experiment_by_name(ws.mlflow.experiment + ws.drift.experiment_suffix)
    runs = c.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.data.tags["drifted"] for r in runs] == ["false", "true"]
    assert runs[1].data.metrics["drift/share"] == pytest.approx(shifted.share)
    assert "drift/x1/effect" in runs[0].data.metrics  # scores logged even without drift
    assert {a.path for a in c.list_artifacts(runs[1].info.run_id, "drift")} == {
        "drift/drift.png",
        "drift/scores.json",
    }


def test_no_champion_yet_says_so_and_exits_cleanly(synthetic):
    import subprocess
    import sys

    from flows.drift import drift_flow
    from flows.ingest import ingest_flow

    workspace = synthetic
    ingest_flow(workspace, ["b01"])
    assert drift_flow(workspace, ["b02"]) is None
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keel.cli",
            "-w",
            str(workspace.workspace),
            "-p",
            "test",
            "drift",
            "--batch",
            "b02",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and "no champion of 'synthetic' yet" in proc.stdout
