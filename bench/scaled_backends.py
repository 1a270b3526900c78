"""The pipeline on the scaled backends against the embedded ones, as a ratio.

The same commands a user runs (`keel ingest` then `keel train`, in fresh workspaces),
alternating rounds:
- embedded: MLflow on sqlite under mlflow/, Prefect ephemeral, a local DVC remote;
- scaled: an MLflow server on PostgreSQL with S3 artifacts (proxied), a Prefect server
  on PostgreSQL, the DVC remote on S3 (moto's server), all on loopback
  (keel.ops.localstack), switched by KEEL_* environment variables only.
The servers are started once, before the rounds (their start-up is reported apart).
Ratio = scaled time / embedded time (1.0 = no cost for the servers).

    python bench/scaled_backends.py [--profile debug] [--months 2013-01] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pipeline(ws: Path, profile: str, months: list[str], env: dict[str, str]) -> dict[str, float]:
    from keel.workloads import init_workspace

    init_workspace(ws)
    times = {}
    base = [sys.executable, "-m", "keel.cli", "-w", str(ws), "-p", profile]
    for name, args in (
        ("ingest", ["ingest", *[arg for m in months for arg in ("--month", m)]]),
        ("train", ["train"]),
    ):
        t0 = time.perf_counter()
        proc = subprocess.run(base + args, env={**os.environ, **env}, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        times[name] = time.perf_counter() - t0
    times["total"] = times["ingest"] + times["train"]
    return times


def main() -> None:
    from keel.ops.localstack import ScaledBackends

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="debug")
    ap.add_argument("--months", nargs="+", default=["2013-01"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scaled_backends.json")
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="keel-bench-prefect-"))
    root = Path(tempfile.mkdtemp(prefix="keel-bench-scaled-"))
    backends = ScaledBackends(root / "servers", free_port)
    (root / "servers").mkdir()
    t0 = time.perf_counter()
    backends.start()
    startup = time.perf_counter() - t0
    rounds: dict[str, list[dict[str, float]]] = {"embedded": [], "scaled": []}
    try:
        for r in range(args.rounds):
            for kind, env in (("embedded", {}), ("scaled", backends.keel_env())):
                rounds[kind].append(pipeline(root / f"{kind}-{r}", args.profile, args.months, env))
                print(kind, r, {k: round(v, 1) for k, v in rounds[kind][-1].items()}, flush=True)
    finally:
        backends.stop()
    med = {
        k: {step: statistics.median(x[step] for x in v) for step in ("ingest", "train", "total")}
        for k, v in rounds.items()
    }
    result = {
        "profile": args.profile,
        "months": args.months,
        "rounds": rounds,
        "median": med,
        "server_startup_s": startup,
        "ratio_total": med["scaled"]["total"] / med["embedded"]["total"],
        "ratio_ingest": med["scaled"]["ingest"] / med["embedded"]["ingest"],
        "ratio_train": med["scaled"]["train"] / med["embedded"]["train"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
