"""The whole flow on a small slice: real git + DVC, real GX, Lightning, MLflow sqlite,
Prefect on the session's shared server with a private PREFECT_HOME."""

import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_ingest_then_train_registers_a_champion_that_predicts_raw_rows(workspace):

    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.registry.tracking import client

    version = ingest_flow(workspace, ["2013-01", "2013-02"])
    assert version.files == 2
    registered = train_flow(workspace)
    assert registered.version == "1" and registered.aliases == ["challenger", "champion"]

    c = client(workspace.mlflow_store)
    run = c.get_run(registered.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["data_version"] == version.md5

    # a fresh process: only the registry URI and raw feature rows (NaN weather included)
    raw = pd.read_parquet(workspace.data.dir / "2013-02.parquet").head(20)
    raw = raw.drop(columns=["delayed", "flight", "year"])
    raw.loc[raw.index[0], ["pressure", "wind_gust"]] = float("nan")
    rows = workspace.workspace.parent / "rows.parquet"
    raw.to_parquet(rows)
    script = (
        "import sys, mlflow, pandas as pd;"
        f"mlflow.set_tracking_uri({workspace.mlflow.tracking_uri!r});"
        f"m = mlflow.pyfunc.load_model('models:/{workspace.mlflow.model_name}@champion');"
        f"out = m.predict(pd.read_parquet({str(rows)!r}));"
        "print(out.to_json(orient='records'))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out) == 20 and all(0.0 <= r["probability"] <= 1.0 for r in out)
    assert all(r["delayed"] in (0, 1) for r in out)

    # a second training: blessed by the (test profile's permissive) gate; policy auto promotes it
    second = train_flow(workspace)
    assert second.aliases == ["challenger", "champion"] and second.decision == "promoted to champion"
    assert str(c.get_model_version_by_alias(workspace.mlflow.model_name, "previous").version) == "1"
    # under policy review it waits instead
    third = train_flow(workspace.with_overrides({"promotion.policy": "review"}))
    assert third.aliases == ["challenger"] and "awaiting review" in third.decision
    assert str(c.get_model_version_by_alias(workspace.mlflow.model_name, "champion").version) == "2"
    # a gate the model cannot pass: registered (for the record) but held, champion untouched
    strict = workspace.with_overrides({"gate.metrics": {"test/roc_auc": {"min": 0.99}}})
    held = train_flow(strict)
    assert held.aliases == ["challenger"] and held.decision.startswith("held: rejected: test/roc_auc >= 0.99")
    tags = c.get_model_version(workspace.mlflow.model_name, held.version).tags
    assert tags["gate.status"] == "rejected" and tags["promotion"] == "held: gate rejected"
    assert str(c.get_model_version_by_alias(workspace.mlflow.model_name, "champion").version) == "2"

    # keel status's lower half: v3 waits for a reviewer (v4 was held by the gate, v2 is champion)
    from keel.cli.overview import overview, overview_lines

    more = overview(workspace)
    assert [r["version"] for r in more["pending_reviews"]] == [third.version]
    assert [r["name"] for r in more["last_runs"]] == [
        c.get_run(v.run_id).info.run_name for v in (held, third, second)
    ]
    assert more["drift"] is None and more["servers"] == []
    assert [x["next_run"] for x in more["schedules"]] == [None, None]
    lines = overview_lines(more)
    assert lines[0].startswith(f"reviews    v{third.version} (") and "keel promote" in lines[0]
    assert lines[-1].startswith("servers    none")

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as pc:
        keys = {a.key for a in pc.read_artifacts()}
    assert {"keel-train-summary", "keel-validation", "keel-gate"} <= keys


def test_invalid_data_stops_before_training_and_registers_nothing(workspace):
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.data.partitions import write_partition
    from keel.data.validation import DataValidationError
    from keel.data.workspace import add_and_push
    from keel.registry.tracking import client

    ingest_flow(workspace, ["2013-01"])
    good = train_flow(workspace)
    path = workspace.data.dir / "2013-01.parquet"
    bad = pd.read_parquet(path)
    bad.loc[bad.index[:4], "origin"] = "XXX"
    write_partition(bad, path)
    add_and_push(workspace.data_store)  # a recorded (DVC) but invalid version

    with pytest.raises(DataValidationError) as err:
        train_flow(workspace)
    message = str(err.value)
    assert "data/2013-01.parquet" in message and "column 'origin'" in message
    assert "allowed categories" in message and "XXX" in message
    assert all(p.exists() for p in err.value.report_paths)
    assert "origin" in err.value.report_paths[1].read_text()

    c = client(workspace.mlflow_store)
    versions = c.search_model_versions(f"name='{workspace.mlflow.model_name}'")
    assert [str(v.version) for v in versions] == [good.version]
    assert str(c.get_model_version_by_alias(workspace.mlflow.model_name, "champion").version) == good.version
    runs = c.search_runs([c.get_experiment_by_name(workspace.mlflow.experiment).experiment_id])
    assert len(runs) == 1  # no run was opened for the rejected data

    # the same through the command a user runs: exit 1, the rule on stderr
    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(workspace.workspace), "-p", "test", "train"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1
    assert "column 'origin'" in proc.stderr and "allowed categories" in proc.stderr
    assert str(workspace.reports.dir / "validation") in proc.stderr
    assert len(c.search_model_versions(f"name='{workspace.mlflow.model_name}'")) == 1
