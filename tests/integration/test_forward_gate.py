"""The forward gate (split.holdout = "newest"): the challenger trains on the older batches,
is compared with the champion on every row of the newest batch, and once blessed is fit
again on every batch; a replay rebuilds the refit bit for bit. Synthetic workload, made a
stream by the setting."""

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STREAM = '[workload]\nname = "synthetic"\n[split]\nholdout = "newest"\nrefit = true\n'


@pytest.fixture
def stream(tmp_path):
    from flows.ingest import ingest_flow
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace

    s = load_settings(init_workspace(tmp_path / "ws", STREAM), profile="test", environ={})
    ingest_flow(s, ["b01", "b02", "b03"])
    return s


def _gate(s, run_id: str) -> dict:
    from keel.registry.tracking import client

    return json.loads(Path(client(s.mlflow_store).download_artifacts(run_id, "gate/gate.json")).read_text())


def test_the_gate_compares_on_the_newest_batch_and_only_a_blessed_model_is_refit_on_all(stream):
    from flows.replay import replay_flow
    from flows.train import train_flow
    from keel.registry.tracking import client

    s = stream
    v1 = train_flow(s)
    gate = _gate(s, v1.run_id)
    assert gate["status"] == "blessed"
    assert gate["holdout"] == {
        "scheme": "newest",
        "batches": ["b03"],
        "rows": 800,
        "note": "",
        "champion_trained_on_it": False,
    }
    c = client(s.mlflow_store)
    run = c.get_run(v1.run_id)
    # the gated fit saw b01 + b02 only (its val share included); the refit saw every batch
    assert int(run.data.params["data.rows_test"]) == 800
    assert int(run.data.params["data.rows_train"]) + int(run.data.params["data.rows_val"]) == 1600
    assert run.data.metrics["refit/rows_train"] > int(run.data.params["data.rows_train"])
    assert run.data.metrics["refit/epochs_run"] >= 1 and run.data.tags["refit"] == "true"
    assert c.get_model_version(s.mlflow.model_name, v1.version).tags["refit"] == "true"
    assert any(m.key.startswith("refit-") for m in c.get_metric_history(v1.run_id, "refit-val/loss"))

    # the same data again: the champion trained on the holdout, and the card says so
    v2 = train_flow(s)
    gate2 = _gate(s, v2.run_id)
    assert gate2["holdout"]["champion_trained_on_it"] is True and gate2["baseline_version"] == v1.version
    card = Path(c.download_artifacts(v2.run_id, "gate/diff_card.md")).read_text()
    assert "Holdout: 800 rows, every row of the newest batch b03" in card and "in-sample" in card

    # replay: the gated fit, then the refit; the registered (refit) weights come back equal
    report = replay_flow(s, v1.version)
    assert report.lineage.refit and report.weights_equal and report.metrics_identical, report.deltas

    # a rejected challenger is registered as it was gated: no refit
    v3 = train_flow(s.with_overrides({"gate.metrics": {"test/roc_auc": {"min": 1.01}}}))
    assert _gate(s, v3.run_id)["status"] == "rejected" and v3.decision.startswith("held")
    run3 = c.get_run(v3.run_id)
    assert "refit/epochs_run" not in run3.data.metrics and "refit" not in run3.data.tags
    assert "refit" not in c.get_model_version(s.mlflow.model_name, v3.version).tags
