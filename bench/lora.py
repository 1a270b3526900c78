"""LoRA against the full fine-tune on the text workload's default profile (the demo months:
1,066 tweets, all-MiniLM-L6-v2's 6 layers, 64 tokens, 3 epochs), same data and seed, as a
user runs them: one workspace, `keel train` (v1: every weight trains), then `keel train` with
`[train] adapter = "lora"` (v2: the encoder frozen, rank-8 adapters on query/value and the
head train). Per version, from its MLflow run and registered artifacts: test accuracy and
macro-F1, trainable parameters (what the version stores: weights.pt is the whole net, an
adapter version's adapter and head), registered artifact bytes, the train-model step's time
(Prefect's task record) and the peak RSS of the command (its process tree's largest).

LoRA takes its own learning rate (`--lora-lr`, default 5e-4: adapters start at zero and move
with a 10x larger step than a full fine-tune's 5e-5, as peft's examples do); everything else
is the profile's.

    python bench/lora.py [--lora-lr 5e-4] [--out bench/results/lora.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def keel(ws: Path, *args: str, env: dict[str, str]) -> tuple[float, int]:
    """Run a keel command; its wall seconds and the peak RSS (KiB) of its largest process."""
    wrapper = (
        "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-m", "keel.cli", "-w", str(ws), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: the gate held the version (registered, not champion)
        raise SystemExit(f"keel {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, int(proc.stderr.strip().splitlines()[-1])


def version_facts(ws: Path, version: str) -> dict:
    import mlflow
    from safetensors import safe_open

    from keel.config.settings import load_settings
    from keel.registry.tracking import client, use_tracking

    settings = load_settings(ws, environ={})
    use_tracking(settings.mlflow_store)
    c = client(settings.mlflow_store)
    mv = c.get_model_version(settings.mlflow.model_name, version)
    metrics = c.get_run(mv.run_id).data.metrics
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{settings.mlflow.model_name}/{version}"))
    artifacts = local / "artifacts"
    stored = sum(p.stat().st_size for p in artifacts.rglob("*") if p.is_file())
    if (artifacts / "weights.pt").is_file():
        import torch

        state = torch.load(artifacts / "weights.pt", weights_only=True)
        trainable = sum(t.numel() for t in state.values() if t.is_floating_point())
    else:
        files = [artifacts / "adapter" / "adapter_model.safetensors", artifacts / "head.safetensors"]
        trainable = 0
        for f in files:
            with safe_open(str(f), "pt") as st:
                trainable += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())  # noqa: SIM118
    return {
        "version": version,
        "test_accuracy": metrics["test/accuracy"],
        "test_macro_f1": metrics["test/macro_f1"],
        "trainable_params": trainable,
        "artifact_bytes": stored,
        "adapter": mv.tags.get("adapter", ""),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lora-lr", type=float, default=5e-4)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "lora.json")
    args = ap.parse_args()

    from command_overhead import task_seconds

    from keel.workloads import build, init_workspace

    root = Path(tempfile.mkdtemp(prefix="keel-bench-lora-"))
    # review: v2 is registered whatever the gate says, and v1 stays champion
    env = {"PREFECT_HOME": str(root / "prefect-home"), "KEEL_PROMOTION__POLICY": "review"}
    ws = init_workspace(root / "ws", build("text").init_toml())
    print(f"workspace {ws}: ingest the demo months ...", flush=True)
    keel(ws, "ingest", "--demo", env=env)
    rows = []
    for version, (name, extra) in enumerate(
        [
            ("full fine-tune", {}),
            ("lora", {"KEEL_TRAIN__ADAPTER": "lora", "KEEL_TRAIN__LR": str(args.lora_lr)}),
        ],
        start=1,
    ):
        print(f"train v{version}: {name} ...", flush=True)
        seconds, rss = keel(ws, "train", env={**env, **extra})
        steps = task_seconds(root / "prefect-home" / "prefect.db", "keel-train")
        row = {
            "name": name,
            **version_facts(ws, str(version)),
            "command_s": seconds,
            "train_step_s": steps.get("train_model", steps.get("train-model")),
            "peak_rss_mib": rss / 1024,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    full, lora = rows
    ratios = {
        "accuracy_delta": lora["test_accuracy"] - full["test_accuracy"],
        "macro_f1_delta": lora["test_macro_f1"] - full["test_macro_f1"],
        "trainable_share": lora["trainable_params"] / full["trainable_params"],
        "artifact_share": lora["artifact_bytes"] / full["artifact_bytes"],
        "train_step_ratio": (lora["train_step_s"] or 0) / (full["train_step_s"] or 1),
        "peak_rss_ratio": lora["peak_rss_mib"] / full["peak_rss_mib"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "lora_vs_full": ratios}, indent=2))
    print(json.dumps(ratios, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
