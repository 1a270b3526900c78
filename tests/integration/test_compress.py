"""keel compress on the platform's synthetic workload (an MLP): the train flow's
automatic compression ([compress] auto) registers a parity-checked ONNX int8 variant
that is served, promoted by the policy like any version, and rolled back from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_compress_auto_registers_a_servable_variant_through_the_same_policy(synthetic):
    import mlflow

    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.registry.promotion import rollback
    from keel.registry.tracking import client, current_alias_version
    from keel.workloads import load_workload

    settings = synthetic.with_overrides({"compress.auto": True, "compress.latency_rounds": 3})
    ingest_flow(settings, ["b01"])
    trained = train_flow(settings)
    assert (trained.version, trained.variant) == ("1", "2"), trained
    c = client(settings.mlflow_store)
    variant = c.get_model_version(settings.mlflow.model_name, "2")
    assert variant.tags["derived_from"] == "1" and variant.tags["compression"] == "onnx-int8"
    assert variant.tags["gate.status"] == "blessed", variant.tags.get("gate.summary")
    checks = c.get_run(variant.run_id).data.metrics
    assert checks["parity/agreement"] >= 0.95
    # a tiny MLP gains nothing in size (the ONNX graph outweighs its few weights): recorded as it is
    parity = json.loads(Path(c.download_artifacts(variant.run_id, "compress/parity.json")).read_text())
    assert checks["parity/size_ratio"] == pytest.approx(
        parity["sizes"]["variant"] / parity["sizes"]["source"]
    )
    # policy auto: the blessed variant became champion, through the servability check
    assert current_alias_version(settings.mlflow_store, "champion") == "2"
    assert trained.variant_decision == "promoted to champion"

    workload = load_workload(settings)
    rows = workload.build_batch("b02", 50)
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    a = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}/1").predict(rows)
    b = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}@champion").predict(rows)
    assert list(a.columns) == list(b.columns) and len(b) == 50
    label = settings.features.label
    assert (a[label] == b[label]).mean() >= 0.95

    # one command back to the source
    rollback(settings.mlflow_store, settings.promotion, reason="variant rolled back in a test", actor="tests")
    assert current_alias_version(settings.mlflow_store, "champion") == "1"
