"""keel compress --method prune / prune-int8 on the platform's synthetic workload (an MLP),
on a private copy of the session's trained registry (v1 champion): the pruned variant is a
new version tagged derived_from, compression and compress.sparsity, decided by the same
parity gate; the registered model answers exactly like v1 with its dropped neurons silenced
(masked here, independently of the slicing); prune-int8 is that net in ONNX int8; replay of
the pruned version builds the same bytes; a sparsity outside (0, 1) exits 2 naming the
key, with nothing registered and champion untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _pyfunc(settings, version: str):
    import mlflow

    from keel.registry.tracking import use_tracking

    use_tracking(settings.mlflow_store)
    return mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}/{version}")


def _versions(settings) -> list[str]:
    from keel.registry.tracking import client

    found = client(settings.mlflow_store).search_model_versions(f"name='{settings.mlflow.model_name}'")
    return sorted(str(v.version) for v in found)


def test_prune_then_prune_int8_registered_behind_the_parity_gate_and_replayed(ws):
    import torch
    from torch import nn

    from flows.compress import compress_flow
    from flows.replay import replay_flow
    from keel.registry.tracking import client, current_alias_version
    from keel.workloads import load_workload

    settings = ws.with_overrides({"compress.sparsity": 0.25, "compress.latency_rounds": 3})
    pruned = compress_flow(settings, "1", "prune")
    assert pruned.version == "4", pruned
    c = client(settings.mlflow_store)
    mv = c.get_model_version(settings.mlflow.model_name, "4")
    tags = mv.tags
    assert (tags["derived_from"], tags["compression"], tags["compress.sparsity"]) == ("1", "prune", "0.25")
    metrics = c.get_run(mv.run_id).data.metrics
    assert metrics["parity/size_ratio"] < 1.0  # fewer weights in weights.pt
    status = tags["gate.status"]
    assert status in ("blessed", "rejected")
    champion = current_alias_version(settings.mlflow_store, "champion")
    assert champion == ("4" if status == "blessed" and settings.promotion.policy == "auto" else "1")

    # the registered variant is v1 with the least important hidden neurons silenced
    v1, v4 = _pyfunc(settings, "1"), _pyfunc(settings, "4")  # each loaded once, as MLflow serves it
    source, variant = v1.unwrap_python_model(), v4.unwrap_python_model()
    hidden = source.net.cfg.hidden
    assert variant.net.cfg.hidden == [max(1, round(w * 0.75)) for w in hidden] != hidden
    masked = type(source.net)(source.net.cfg).eval()
    masked.load_state_dict(source.net.state_dict())
    linears = [m for m in masked.mlp if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, width in enumerate(hidden):
            score = linears[i].weight.abs().sum(1) * linears[i + 1].weight.abs().sum(0)
            drop = score.argsort()[: width - max(1, round(width * 0.75))]
            linears[i].weight[drop], linears[i].bias[drop] = 0.0, 0.0
    rows = load_workload(settings).build_batch("b02", 200)
    cat, num = source.preprocessor.transform(rows)
    with torch.no_grad():
        expected = masked(torch.from_numpy(cat), torch.from_numpy(num))
        got = variant.net(torch.from_numpy(cat), torch.from_numpy(num))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    served = v4.predict(rows)
    assert list(served.columns) == list(v1.predict(rows).columns)

    # pruned, then ONNX int8: the same smaller net in onnxruntime
    both = compress_flow(settings, "1", "prune-int8")
    mv5 = c.get_model_version(settings.mlflow.model_name, both.version)
    assert (mv5.tags["compression"], mv5.tags["compress.sparsity"]) == ("prune-int8", "0.25")
    net_json = json.loads((_artifacts(settings, both.version) / "net.json").read_text())
    assert net_json["hidden"] == variant.net.cfg.hidden and net_json["compression"] == "prune-int8"
    int8 = _pyfunc(settings, both.version).predict(rows)
    label = settings.features.label
    assert (int8[label].to_numpy() == served[label].to_numpy()).mean() >= 0.95

    # replay: v1 retrained from its data, pruned again the same way: the same weights.pt
    report = replay_flow(settings, "4")
    assert report.weights_equal and report.metrics_identical, report.deltas


def _artifacts(settings, version: str):
    from pathlib import Path

    import mlflow

    from keel.registry.tracking import use_tracking

    use_tracking(settings.mlflow_store)
    local = mlflow.artifacts.download_artifacts(f"models:/{settings.mlflow.model_name}/{version}")
    return next(p.parent for p in Path(local).rglob("net.json"))


def test_a_sparsity_outside_zero_one_exits_2_naming_the_key_and_registers_nothing(ws):
    from keel.registry.tracking import current_alias_version

    before = _versions(ws)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keel.cli",
            "-w",
            str(ws.workspace),
            "-p",
            "test",
            "compress",
            "1",
            "-m",
            "prune",
        ],
        env={**os.environ, "KEEL_COMPRESS__SPARSITY": "1.5"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "compress.sparsity" in proc.stderr and "less than 1" in proc.stderr, proc.stderr
    assert _versions(ws) == before and current_alias_version(ws.mlflow_store, "champion") == "1"


def test_a_distilled_recovery_is_tagged_and_replays_bit_for_bit(ws):
    """[compress] recovery = "distill" with one epoch: the version records it (tag and
    net.json), answers nearer v1 on its held-out rows than the pruned net before recovery, and
    its replay fine-tunes towards the same outputs into the same weights."""
    from flows.compress import compress_flow
    from flows.replay import replay_flow
    from keel.registry.tracking import client

    base = {"compress.sparsity": 0.5, "compress.latency_rounds": 3}
    raw = compress_flow(ws.with_overrides(base), "1", "prune")
    distill = {**base, "compress.recovery_epochs": 1, "compress.recovery": "distill"}
    settings = ws.with_overrides(distill)
    variant = compress_flow(settings, "1", "prune")
    c = client(settings.mlflow_store)
    mv = c.get_model_version(settings.mlflow.model_name, variant.version)
    assert (mv.tags["compress.recovery"], mv.tags["compress.recovery_epochs"]) == ("distill", "1")
    assert (
        json.loads((_artifacts(settings, variant.version) / "net.json").read_text())["recovery"] == "distill"
    )
    raw_mv = c.get_model_version(settings.mlflow.model_name, raw.version)
    assert "compress.recovery" not in raw_mv.tags  # labels (the default) and no recovery: untagged

    def parity(m) -> dict[str, float]:
        return c.get_run(m.run_id).data.metrics

    closer, pruned = parity(mv), parity(raw_mv)
    assert closer["parity/max_abs_diff"] < pruned["parity/max_abs_diff"], (closer, pruned)
    assert closer["parity/agreement"] >= pruned["parity/agreement"], (closer, pruned)
    report = replay_flow(settings, variant.version)
    assert report.lineage.recovery == "distill"
    assert report.weights_equal and report.metrics_identical, report.deltas
