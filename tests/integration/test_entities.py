"""Token classification end to end (its own file: pytest-xdist runs it beside the text
workload's module)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_token_classification_end_to_end_with_its_onnx_variant(tmp_path, matches_schema):
    """entities (rule-generated BIO tags on the real tweets): train -> one tag per word
    from raw strings -> entity-level metrics recorded -> an ONNX variant tags per word too."""
    import mlflow
    import pandas as pd

    from flows.compress import compress_flow
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.registry.tracking import client
    from keel.workloads import build, init_workspace, load_workload

    ws = init_workspace(tmp_path / "ws", build("entities").init_toml())
    settings = load_settings(ws, profile="test", environ={}).with_overrides({"compress.latency_rounds": 3})
    ingest_flow(settings, load_workload(settings).demo_batches())
    registered = train_flow(settings)
    c = client(settings.mlflow_store)
    metrics = c.get_run(registered.run_id).data.metrics
    for name in ("test/entity_f1", "test/entity_precision", "test/entity_recall", "test/token_accuracy"):
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics)
    # most words are O, so token accuracy alone cannot fail a model that tags everything O (it
    # would score the O share); entities can: such a model finds none (entity F1 0). Six steps
    # find some of the hashtags (entity F1 0.10 here, of which TAG 0.22).
    assert metrics["test/token_accuracy"] > 0.5
    assert metrics["test/entity_recall"] > 0 and metrics["test/entity_f1"] > 0
    assert metrics["test/entity_f1_TAG"] > 0

    texts = ["Thank you Iowa and @FoxNews #MAGA", "hello", "New York, New York!"]
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    out = mlflow.pyfunc.load_model("models:/entities/1").predict(pd.DataFrame({"text": texts}))
    assert list(out.columns) == ["tags"]
    tag_set = {"O", "B-LOC", "I-LOC", "B-TAG", "B-USER"}
    for text, tags in zip(texts, out["tags"], strict=True):
        assert len(tags.split()) == len(text.split()) and set(tags.split()) <= tag_set

    from keel.cli import summary

    before = summary.aliases(settings)
    variant = compress_flow(settings, "1", "onnx")
    said = matches_schema(summary.compress(settings, variant, before, "1", "onnx"), "compress")
    assert said["version"] == variant.version and said["source_version"] == "1"
    assert said["champion_version"] == "1" and said["parity"]["agreement"] == 1.0
    lines = summary.compress_text(settings, said)
    assert lines[1].startswith("  from      v1 with onnx: label agreement 1.0000, size x")
    fp32 = mlflow.pyfunc.load_model(f"models:/entities/{variant.version}").predict(
        pd.DataFrame({"text": texts})
    )
    assert fp32["tags"].tolist() == out["tags"].tolist()  # the fp32 export tags exactly as the eager net
    assert c.get_run(variant.run_id).data.metrics["parity/agreement"] == 1.0
