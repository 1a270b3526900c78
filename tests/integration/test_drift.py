"""The drift monitor against the champion's training data (ephemeral Prefect, sqlite MLflow)."""

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_shifted_batch_drifts_unshifted_does_not_and_scores_are_logged(ws, tmp_path):
    from flows.drift import drift_flow
    from keel.tracking import client

    ws = ws.with_overrides({"drift.share_threshold": 0.3})  # the 6 shifted features below are 1/3
    same = drift_flow(ws, ["2013-01"])  # the champion trained on this very sample
    assert same is not None and same.share == 0.0 and not same.drifted
    frame = pd.read_parquet(ws.data.dir / "2013-01.parquet")
    hot = frame.assign(
        temp=frame["temp"] + 40,
        dewp=frame["dewp"] + 35,
        humid=frame["humid"] / 2,
        pressure=frame["pressure"] - 20,
        visib=frame["visib"] / 3,
        wind_speed=frame["wind_speed"] * 3,
    )
    path = tmp_path / "heatwave.parquet"
    hot.to_parquet(path)
    shifted = drift_flow(ws, [], {"heatwave": path})
    assert shifted.drifted and shifted.share >= ws.drift.share_threshold
    assert {f.feature for f in shifted.features if f.drifted} >= {"temp", "dewp", "humid", "pressure"}
    c = client(ws)
    exp = c.get_experiment_by_name(ws.mlflow.experiment + ws.drift.experiment_suffix)
    runs = c.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.data.tags["drifted"] for r in runs] == ["false", "true"]
    assert runs[1].data.metrics["drift/share"] == pytest.approx(shifted.share)
    assert "drift/temp/effect" in runs[0].data.metrics  # scores logged even without drift
    assert {a.path for a in c.list_artifacts(runs[1].info.run_id, "drift")} == {
        "drift/drift.png",
        "drift/scores.json",
    }


def test_no_champion_yet_says_so_and_exits_cleanly(workspace):
    import subprocess
    import sys

    from flows.drift import drift_flow
    from flows.ingest import ingest_flow

    ingest_flow(workspace, ["2013-01"])
    assert drift_flow(workspace, ["2013-02"]) is None
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
            "--month",
            "2013-02",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and "no champion of 'flight-delay' yet" in proc.stdout
