"""Structured pruning against int8 alone on the flights MLP (the README's main job): one
workspace, the demo months, one trained version; then `keel compress 1` with each method and
sparsity, as a user runs it. Every row is the variant's own parity run, measured by keel
against v1 in the same run: size ratio, p50/p99 latency ratios at 1 and 32 rows (each model
in a fresh process), label agreement, the ROC AUC delta, and the parity gate's verdict.

    python bench/prune.py [--sparsity 0.25 0.5 0.75] [--recovery-epochs 0 3] [--out bench/results/prune.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def keel(ws: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(ws), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode not in (0, 1):  # 1: the parity gate rejected the variant (registered, held)
        raise SystemExit(f"keel {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) if "--json" in args else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--recovery-epochs", type=int, nargs="+", default=[0, 3])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "prune.json")
    args = ap.parse_args()

    from keel.workloads import init_workspace

    root = Path(tempfile.mkdtemp(prefix="keel-bench-prune-"))
    # review: no variant becomes champion, so every variant is compared with v1 (its baseline)
    env = {"PREFECT_HOME": str(root / "prefect-home"), "KEEL_PROMOTION__POLICY": "review"}
    ws = init_workspace(root / "ws")
    print(f"workspace {ws}: ingest the demo months, train v1 ...", flush=True)
    keel(ws, "ingest", "--demo", env=env)
    keel(ws, "train", env=env)
    runs = [("onnx-int8", None, 0)] + [
        (m, s, e) for e in args.recovery_epochs for s in args.sparsity for m in ("prune", "prune-int8")
    ]
    rows = []
    for method, sparsity, epochs in runs:
        extra = {"KEEL_COMPRESS__SPARSITY": str(sparsity)} if sparsity else {}
        extra["KEEL_COMPRESS__RECOVERY_EPOCHS"] = str(epochs)
        out = keel(ws, "compress", "1", "--method", method, "--json", env={**env, **extra})
        p = out["parity"]
        row = {
            "method": method,
            "sparsity": sparsity,
            "recovery_epochs": epochs,
            "version": out["version"],
            "size_ratio": p["size_ratio"],
            "p50_ratio_1": p.get("p50_ratio_1"),
            "p50_ratio_32": p.get("p50_ratio_32"),
            "p99_ratio_32": p.get("p99_ratio_32"),
            "agreement": p.get("agreement"),
            "roc_auc_delta": out["metrics"]["test/roc_auc"] - out["champion_metrics"]["test/roc_auc"],
            "gate": out["gate"]["passed"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    header = f"{'method':<12}{'sparsity':>9}{'epochs':>7}{'size':>7}{'p50@1':>7}{'p50@32':>8}"
    print(f"{header}{'agree':>7}{'dAUC':>9}  gate")
    for r in rows:
        sp = f"{r['sparsity']:.2f}" if r["sparsity"] else "-"
        print(
            f"{r['method']:<12}{sp:>9}{r['recovery_epochs']:>7}{r['size_ratio']:>7.2f}"
            f"{r['p50_ratio_1']:>7.2f}{r['p50_ratio_32']:>8.2f}"
            f"{r['agreement']:>7.3f}{r['roc_auc_delta']:>+9.4f}  {'passed' if r['gate'] else 'rejected'}"
        )
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
