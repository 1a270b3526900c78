"""Each shipped workload end to end through the CLI, as a newcomer runs it from the README.

Per workload, in a throw-away workspace on embedded defaults (default profile):
``keel init --workload W`` -> ``keel ingest --demo`` -> ``keel train`` (each timed as
the whole command, process start and imports included), the headline test metric of
the registered champion, then ``keel serve`` on a loopback port and one-record POST
/predict requests: the served p50/p99, against the same model's predict() called
in-process on the same row (the baseline the HTTP layer wraps, same run, same machine).

    python bench/workloads.py [--requests 500] [--only digits]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent

HEADLINE = {
    "binary": "test/roc_auc",
    "multiclass": "test/accuracy",
    "regression": "test/r2",
    "tokens": "test/entity_f1",
}


def _serve_latency():
    """bench/serve_latency.py's request client and percentile summary, loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_latency", HERE / "serve_latency.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def one_workload(name: str, root: Path, requests: int) -> dict:
    import pandas as pd

    from keel.config.settings import load_settings
    from keel.registry.tracking import client
    from keel.serving.server import load_version
    from keel.workloads import load_workload

    ws = root / name
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING"}
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # MLflow exports the last store used
        env.pop(variable, None)
    keel = [sys.executable, "-m", "keel.cli", "-w", str(ws)]
    timed([sys.executable, "-m", "keel.cli", "init", str(ws), "--workload", name], env)
    ingest_s = timed([*keel, "ingest", "--demo"], env)
    train_s = timed([*keel, "train"], env)

    settings = load_settings(ws, environ={})
    workload = load_workload(settings)
    loaded = load_version(settings.mlflow_store, "1")
    run = client(settings.mlflow_store).get_model_version(settings.mlflow.model_name, "1").run_id
    metrics = client(settings.mlflow_store).get_run(run).data.metrics
    headline = HEADLINE[workload.objective()]

    batch = workload.build_batch(workload.demo_batches()[0], 0)
    cols = list(loaded.columns)
    row = batch[cols].head(1).reset_index(drop=True)
    body = json.dumps({"records": json.loads(row.to_json(orient="records"))}).encode()
    sl = _serve_latency()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [*keel, "serve", "--port", str(port), "--poll", "3600"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        sl.client((port, body, 100))  # warm-up
        t = time.perf_counter()
        http = sl.summary(sl.client((port, body, requests)), time.perf_counter() - t)
    finally:
        server.terminate()
        server.wait(timeout=30)
    frame = pd.DataFrame(row)
    for _ in range(100):
        loaded.predict(frame)
    lat = []
    t0 = time.perf_counter()
    for _ in range(requests):
        t = time.perf_counter()
        loaded.predict(frame)
        lat.append(time.perf_counter() - t)
    inproc = sl.summary(lat, time.perf_counter() - t0)
    return {
        "workload": name,
        "objective": workload.objective(),
        "demo_batches": workload.demo_batches(),
        "ingest_s": round(ingest_s, 1),
        "train_s": round(train_s, 1),
        "ingest_plus_train_s": round(ingest_s + train_s, 1),
        "headline": headline,
        "headline_value": round(metrics[headline], 4),
        "test_rows": int(metrics.get("test/rows", 0)),
        "served_p50_ms": http["p50_ms"],
        "served_p99_ms": http["p99_ms"],
        "in_process_p50_ms": inproc["p50_ms"],
        "served_over_in_process_p50": round(http["p50_ms"] / inproc["p50_ms"], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--only", action="append", help="a workload name; repeatable (default: all shipped)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "workloads.json")
    args = ap.parse_args()

    from keel.workloads import shipped

    root = Path(tempfile.mkdtemp(prefix="keel-bench-workloads-"))
    names = args.only or [name for name, _ in shipped()]
    rows = []
    for name in names:
        rows.append(one_workload(name, root, args.requests))
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bench": "workloads", "results": rows}, indent=1) + "\n")
    print("| workload | ingest + train | headline | served p50 (in-process p50) |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workload']} | {r['ingest_s']} + {r['train_s']} s | {r['headline']} {r['headline_value']} "
            f"({r['test_rows']} test rows) | {r['served_p50_ms']} ms ({r['in_process_p50_ms']} ms) |"
        )


if __name__ == "__main__":
    main()
