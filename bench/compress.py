"""Compressed vs original: size, CPU latency (p50/p99 at 1 and 32 rows, each model in
a fresh process) and metric deltas on the original's own held-out rows, per method.

Runs the real commands' flows in a temp workspace: `keel init --workload text`,
ingest the demo months, train (the fine-tune is timed and its test metrics kept),
then `keel compress 1 --method M` for every method. The numbers are the variants'
parity evidence as keel records it (compress/parity.json), so the bench and the
registry agree. Published figures to compare with: dynamic int8 on BERT-base ~1.8x
faster on CPU for -0.007 F1; DistilBERT 38 ms -> 14 ms with ONNX int8.

    python bench/compress.py [--workload text] [--profile ""|debug] [--methods onnx-int8,onnx]

A pruning method takes its sparsity, recovery epochs and recovery target after colons:
``prune:0.5:1`` is `keel compress --method prune` with ``[compress] sparsity = 0.5`` and
``recovery_epochs = 1``; ``prune-int8:0.5:1:distill`` also ``recovery = "distill"`` (the
text-model pruning table in bench/README.md: ``--methods
onnx-int8,prune:0.5:0,prune:0.5:1,prune-int8:0.5:1,prune:0.25:1,prune-int8:0.25:1``, then
``prune:0.5:1:distill,prune-int8:0.5:1:distill,prune-int8:0.25:1:distill``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="text")
    ap.add_argument("--profile", default="", help='"" = the default profile (the real model)')
    ap.add_argument("--methods", default="onnx-int8,onnx")
    ap.add_argument("--rounds", type=int, default=50, help="timed predictions per batch size")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compress.json")
    args = ap.parse_args()
    for name, value in {
        "PREFECT_HOME": tempfile.mkdtemp(prefix="bench-prefect-"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }.items():
        os.environ.setdefault(name, value)

    from flows.compress import compress_flow
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.registry.tracking import client
    from keel.workloads import build, init_workspace, load_workload

    root = Path(tempfile.mkdtemp(prefix="bench-compress-")) / "ws"
    ws = init_workspace(root, build(args.workload).init_toml())
    settings = load_settings(ws, profile=args.profile or None, environ={}).with_overrides(
        {"compress.latency_rounds": args.rounds}
    )
    ingest_flow(settings, load_workload(settings).demo_batches())
    start = time.perf_counter()
    source = train_flow(settings)
    train_s = time.perf_counter() - start
    c = client(settings.mlflow_store)
    source_run = c.get_run(source.run_id)
    results = []
    for spec in args.methods.split(","):
        method, *knobs = spec.split(":")
        keys = ("compress.sparsity", "compress.recovery_epochs", "compress.recovery")
        overrides = dict(zip(keys, knobs, strict=False))
        start = time.perf_counter()
        variant = compress_flow(settings.with_overrides(overrides), source.version, method)
        run = c.get_run(variant.run_id)
        parity = json.loads(Path(c.download_artifacts(variant.run_id, "compress/parity.json")).read_text())
        deltas = {
            k: round(v - source_run.data.metrics[k], 6)
            for k, v in run.data.metrics.items()
            if k.startswith("test/") and k in source_run.data.metrics and k != "test/rows"
        }
        latency = parity["latency"]
        results.append(
            {
                "method": spec,
                "version": variant.version,
                "decision": variant.decision,
                "compress_s": round(time.perf_counter() - start, 1),
                "size_mb": {k: round(v / 1e6, 2) for k, v in parity["sizes"].items()},
                "size_ratio": round(parity["metrics"]["parity/size_ratio"], 3),
                "latency_ms": latency,
                "speedup_p50": {
                    n: round(latency["source"][n]["p50_ms"] / latency["variant"][n]["p50_ms"], 2)
                    for n in latency["source"]
                },
                "agreement": parity["metrics"].get("parity/agreement"),
                "max_abs_diff": round(parity["metrics"]["parity/max_abs_diff"], 5),
                "test_metric_deltas": deltas,
            }
        )
    result = {
        "bench": "compress",
        "workload": args.workload,
        "profile": args.profile or "default",
        "source": {
            "version": source.version,
            "train_flow_s": round(train_s, 1),
            "test_metrics": {
                k: round(v, 4) for k, v in source_run.data.metrics.items() if k.startswith("test/")
            },
            "rows": source_run.data.params.get("data.rows"),
        },
        "variants": results,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
