"""The gate end to end with real champion-relative rules (every test profile's own gate is
``unfailable``): a challenger deliberately worse than the champion, trained on the same data
from the same seeded start with a learning rate too small to move it, is rejected for its
drop, and nothing moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# the synthetic binary workload's own rules' shape, with limits a trained model keeps
RULES = {"gate.metrics": {"test/roc_auc": {"max_drop": 0.02}, "test/log_loss": {"max_rise": 0.05}}}


def test_a_challenger_behind_the_champion_is_rejected_and_champion_stays(tmp_path):
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.registry.promotion import Registry
    from keel.registry.tracking import client
    from keel.workloads import init_workspace, load_workload

    toml = '[workload]\nname = "synthetic"\nparams = { objective = "binary" }\n'
    base = load_settings(init_workspace(tmp_path / "ws", toml), profile="test", environ={})
    ingest_flow(base, load_workload(base).demo_batches())
    trained = base.with_overrides({**RULES, "train.max_epochs": 5})
    v1 = train_flow(trained)
    assert v1.version == "1" and "champion" in v1.aliases
    # the same data, seed and network; a learning rate that leaves the seeded start where it is
    v2 = train_flow(base.with_overrides({**RULES, "train.lr": 1e-9}))
    assert v2.version == "2"

    c = client(base.mlflow_store)
    m1 = c.get_run(v1.run_id).data.metrics
    m2 = c.get_run(v2.run_id).data.metrics
    tags = c.get_model_version(base.mlflow.model_name, "2").tags
    assert tags["gate.status"] == "rejected" and tags["gate.baseline"] == "1", tags
    gate = json.loads(Path(c.download_artifacts(v2.run_id, "gate/gate.json", str(tmp_path))).read_text())
    failed = [check for check in gate["checks"] if not check["passed"]]
    assert failed and any("test/roc_auc" in check["name"] and "drop" in check["name"] for check in failed), (
        gate
    )
    # the champion's score on the challenger's own test rows, and the challenger's, as recorded
    (roc,) = (check for check in gate["checks"] if check["name"].startswith("test/roc_auc drop"))
    assert roc["baseline"] - m2["test/roc_auc"] == pytest.approx(roc["value"], abs=1e-9)
    assert roc["value"] > 0.02 and m1["test/roc_auc"] > m2["test/roc_auc"] + 0.02
    assert "test/roc_auc drop" in tags["gate.summary"]
    # nothing moved: v1 is still champion, v2 holds no alias but challenger's, the ledger has
    # only v1's first promotion
    reg = Registry(base.mlflow_store, base.promotion)
    assert reg.alias("champion") == "1"
    assert "champion" not in (v2.aliases or [])
    assert [(e.action, e.to_version) for e in reg.ledger()] == [("initial", "1")]
