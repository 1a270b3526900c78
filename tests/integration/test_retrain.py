"""keel-retrain and keel-monitor run as flows (no deployment; the session's shared Prefect
server): the next batch, a rejected batch, and drift -> exactly one retraining (dedupe,
cooldown)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _versions(ws) -> list[str]:
    from keel.registry.tracking import client

    return sorted(
        str(v.version)
        for v in client(ws.mlflow_store).search_model_versions(f"name='{ws.mlflow.model_name}'")
    )


def test_retrain_takes_the_next_batch_and_a_rejected_batch_trains_nothing(ws, tmp_path):
    from flows.retrain import retrain_flow
    from keel.registry.tracking import current_alias_version

    out = retrain_flow(ws)  # data/ holds b01: the workload's next batch is b02
    assert out.status == "promoted" and out.batches == ["b02"] and out.model_version == "4"
    assert (ws.data.dir / "b02.parquet").exists() and current_alias_version(
        ws.mlflow_store, "champion"
    ) == "4"
    assert json.loads((ws.workspace / "data-versions.jsonl").read_text().splitlines()[-1])["added"] == ["b02"]

    bad = pd.read_parquet(ws.data.dir / "b01.parquet")
    bad["target"] = bad["target"].astype("float64")
    bad.loc[bad.index[:3], "target"] = float("nan")  # rows without a label
    path = tmp_path / "late-feed.parquet"
    bad.to_parquet(path)
    dvc_before = ws.dvc_file.read_text()
    out = retrain_flow(ws, files={"late-feed": path})
    assert out.status == "rejected" and out.model_version is None
    assert str(path) in out.detail and "column 'target'" in out.detail and "label present" in out.detail
    assert _versions(ws) == ["1", "2", "3", "4"] and current_alias_version(ws.mlflow_store, "champion") == "4"
    assert ws.dvc_file.read_text() == dvc_before and not (ws.data.dir / "late-feed.parquet").exists()
    record = json.loads((ws.reports.dir / "ingest" / "rejections.jsonl").read_text().splitlines()[-1])
    assert record["batches"] == ["late-feed"] and record["sources"] == [str(path)]
    assert {(f["column"], f["rule"]) for f in record["failures"]} == {("target", "label present")}

    # the command: exit 1, the file, column and rule on stderr, still nothing trained
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keel.cli",
            "-w",
            str(ws.workspace),
            "-p",
            "test",
            "retrain",
            "--file",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "batch rejected" in proc.stderr and "column 'target'" in proc.stderr
    assert _versions(ws) == ["1", "2", "3", "4"]


def _shifted(ws, path, by: float):
    """b01 with two of its six features moved: x1 by ``by``, x2 scaled."""
    frame = pd.read_parquet(ws.data.dir / "b01.parquet")
    frame.assign(x1=frame["x1"] + by, x2=frame["x2"] * 3).to_parquet(path)
    return path


def test_drift_starts_one_inline_retraining_then_dedupe_and_cooldown(ws, tmp_path):
    from flows.monitor import monitor_flow

    ws = ws.with_overrides({"drift.share_threshold": 0.3})  # 2 of 6 features are shifted below
    calm = monitor_flow(ws, ["b01"])  # the champion's own training batch
    assert calm.status == "no-drift" and calm.trigger.action == "none" and calm.retrained is None
    assert _versions(ws) == ["1", "2", "3"]

    hot = monitor_flow(ws, files={"heatwave": _shifted(ws, tmp_path / "heatwave.parquet", 4.0)})
    assert hot.status == "drift" and hot.report.share >= 0.3
    assert hot.trigger.action == "inline" and hot.retrained.status == "promoted"
    assert hot.retrained.batches == ["heatwave"] and _versions(ws) == ["1", "2", "3", "4"]

    # the same batch again (another name, same rows): handled already
    again = monitor_flow(ws, files={"heatwave-again": tmp_path / "heatwave.parquet"})
    assert again.trigger.action in ("deduped", "cooldown") and again.retrained is None
    no_cooldown = ws.with_overrides({"drift.cooldown_s": 0})
    again = monitor_flow(no_cooldown, files={"heatwave-again": tmp_path / "heatwave.parquet"})
    assert again.trigger.action == "deduped" and again.retrained is None
    # another drifted batch inside the cooldown: no second retraining either
    other = monitor_flow(ws, files={"scorcher": _shifted(ws, tmp_path / "scorcher.parquet", 3.0)})
    assert other.status == "drift" and other.trigger.action == "cooldown" and other.retrained is None
    assert _versions(ws) == ["1", "2", "3", "4"]


def test_monitor_rejects_an_invalid_batch_without_drift_or_training(ws, tmp_path):
    from flows.monitor import monitor_flow

    bad = pd.read_parquet(ws.data.dir / "b01.parquet").drop(columns=["x1"])
    path = tmp_path / "broken.parquet"
    bad.to_parquet(path)
    out = monitor_flow(ws, files={"broken": path})
    assert out.status == "rejected" and out.report is None and out.trigger is None
    assert str(path) in out.rejected.detail and "schema" in out.rejected.detail
    assert _versions(ws) == ["1", "2", "3"]
