"""keel simulate on the session's shared Prefect server (tests/conftest.py): batches through
drift, ingest, retrain, gate and policy, on the synthetic workload with a multiclass
objective (the timeline follows its headline metric, accuracy)."""

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_two_batches_produce_a_timeline_and_leave_the_workspace_alone(tmp_path, matches_schema):
    from flows.simulate import simulate_flow
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace

    toml = '[workload]\nname = "synthetic"\nparams = { objective = "multiclass" }\n'
    workspace = load_settings(init_workspace(tmp_path / "ws", toml), profile="test", environ={})
    path = simulate_flow(workspace, ["b01", "b02"])
    assert path.name == "timeline.md" and path.with_suffix(".png").stat().st_size > 0
    records = json.loads(path.with_suffix(".json").read_text())
    assert [r["month"] for r in records] == ["b01", "b02"]
    first, second = records
    assert (
        first["champion_before"] is None and first["champion_after"] == "1" and first["drift_share"] is None
    )
    assert second["champion_before"] == "1" and 0.0 < second["forward_auc"] < 1.0
    # the test profile's gate has no limits it can fail (tests/model/test_gate.py and
    # test_gate_rejects.py judge real rules), so v2 is blessed and, by the policy, champion
    assert second["drift_share"] is not None and second["gate"] == "blessed"
    assert second["champion_auc"] is not None  # the gate compared against v1 on the same rows
    # the champion was judged on b02 first (the synthetic workload brings no guardrail rules)
    assert first["guardrail"] == "no-champion" and second["guardrail"] == "unjudged"
    assert second["champion_after"] == "2"
    # the champion's score on the new batch, computed here: v1 (loaded on its own from the
    # simulation's registry) on every row of b02, scored by scikit-learn
    import mlflow
    import pandas as pd
    from sklearn.metrics import accuracy_score

    sim = workspace.reports.dir / "simulation" / "b01_b02" / "ws"
    mlflow.set_tracking_uri(f"sqlite:///{sim / 'mlflow' / 'mlflow.db'}")
    rows = pd.read_parquet(sim / "data" / "b02.parquet")
    v1 = mlflow.pyfunc.load_model(f"models:/{workspace.mlflow.model_name}/1")
    label = workspace.features.label
    expected = accuracy_score(rows[label].astype(str), v1.predict(rows)[label].astype(str))
    assert second["forward_auc"] == pytest.approx(expected, abs=1e-12)
    text = path.read_text()
    assert "| b02 | v1 |" in text and "champion accuracy on the new batch" in text
    assert "## The gate against the next batch" in text and "## Guardrail" in text
    # the simulation ran in its own workspace: the user's has no data and no model
    assert not workspace.data.dir.exists() and not workspace.dvc_file.exists()
    assert str(workspace.reports.dir / "simulation") in str(path)

    # what keel simulate prints: one line per batch (and --json: the object by its schema)
    from keel.cli import summary

    out = matches_schema(summary.simulate(path, ["b01", "b02"]), "simulate")
    assert out["champion_before"] is None and out["champion_after"] == second["champion_after"]
    assert out["promotions"] == 1 + (second["champion_after"] != "1") and out["months"] == records
    lines = summary.simulate_text(workspace, out)
    assert lines[0].startswith("simulated 2 batches in ") and "accuracy" in lines[2]
    b01, b02 = (next(line for line in lines if line.strip().startswith(m)) for m in ("b01", "b02"))
    assert b01.split()[-2:] == [first["gate"], "v1"] and b02.split()[1] == "v1"
    assert f"champion  - -> v{second['champion_after']}" in "\n".join(lines)
