"""`keel serve` latency and throughput vs the model called in-process; batch rows/s.

Builds a throw-away workspace (2013-01, full month; a short training), starts
`keel serve` on a loopback port as its own process, then measures one-record
POST /predict requests over persistent HTTP connections from 1 and 8 client
processes. Baselines in the same run: the served model's own predict() on a one-row
frame in-process (what the HTTP layer wraps), and the bare torch forward. Batch
scoring: keel.serving.batch.score_file over the whole 2013 year (336,776 rows).

    python bench/serve_latency.py [--requests 2000] [--per-client 400]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def summary(lat_s: list[float], wall_s: float) -> dict:
    ms = [x * 1000 for x in lat_s]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "mean_ms": round(statistics.mean(ms), 3),
        "throughput_per_s": round(len(ms) / wall_s, 1),
    }


def client(args: tuple[int, bytes, int]) -> list[float]:
    import http.client

    port, body, n = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", "/predict", body, {"content-type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests for the 1-client run")
    ap.add_argument("--per-client", type=int, default=400, help="requests per client, 8 clients")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_latency.json")
    args = ap.parse_args()

    import pandas as pd
    import torch

    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.data.partitions import write_partition
    from keel.serving.batch import score_file
    from keel.serving.server import load_version
    from keel.workloads import init_workspace
    from keel.workloads.flights.data import build_month, load_source

    root = Path(tempfile.mkdtemp(prefix="keel-bench-serve-"))
    ws = init_workspace(root / "ws")
    env = {**os.environ, "KEEL_TRAIN__MAX_EPOCHS": "3", "PREFECT_HOME": str(root / "prefect")}
    os.environ.update({"PREFECT_HOME": env["PREFECT_HOME"], "PREFECT_LOGGING_LEVEL": "WARNING"})
    settings = load_settings(ws, environ={"KEEL_TRAIN__MAX_EPOCHS": "3"})
    ingest_flow(settings, ["2013-01"])
    version = train_flow(settings).version

    cols = [*settings.features.categorical, *settings.features.numeric]
    month = pd.read_parquet(settings.data.dir / "2013-01.parquet")
    record = json.loads(month[cols].head(1).to_json(orient="records"))
    body = json.dumps({"records": record}).encode()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "-w", str(ws), "serve", "--port", str(port), "--poll", "3600"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result: dict = {"bench": "serve_latency", "model_version": version}
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        client((port, body, 200))  # warm-up
        t = time.perf_counter()
        one = client((port, body, args.requests))
        result["http_1_client"] = summary(one, time.perf_counter() - t)
        with mp.get_context("spawn").Pool(8) as pool:
            t = time.perf_counter()
            many = pool.map(client, [(port, body, args.per_client)] * 8)
            result["http_8_clients"] = summary([x for xs in many for x in xs], time.perf_counter() - t)
    finally:
        server.terminate()
        server.wait(timeout=30)

    loaded = load_version(settings.mlflow_store, version)
    frame = month[cols].head(1).reset_index(drop=True)
    for _ in range(200):
        loaded.predict(frame)
    lat = []
    t0 = time.perf_counter()
    for _ in range(args.requests):
        t = time.perf_counter()
        loaded.predict(frame)
        lat.append(time.perf_counter() - t)
    result["in_process_predict_1_row"] = summary(lat, time.perf_counter() - t0)
    cat, num = loaded.model.preprocessor.transform(frame)
    cat, num = torch.from_numpy(cat), torch.from_numpy(num)
    net = loaded.model.net
    with torch.no_grad():
        lat = []
        t0 = time.perf_counter()
        for _ in range(args.requests):
            t = time.perf_counter()
            net(cat, num)
            lat.append(time.perf_counter() - t)
    result["torch_forward_1_row"] = summary(lat, time.perf_counter() - t0)
    result["http_over_in_process_p50"] = round(
        result["http_1_client"]["p50_ms"] / result["in_process_predict_1_row"]["p50_ms"], 2
    )

    flights, weather = load_source()
    year = pd.concat(
        [build_month(flights, weather, f"2013-{m:02d}") for m in range(1, 13)], ignore_index=True
    )
    src = write_partition(year, root / "year.parquet")
    t = time.perf_counter()
    scored = score_file(loaded, src, root / "scored.parquet", settings.serve.chunk_rows)
    wall = time.perf_counter() - t
    result["batch"] = {
        "rows": scored["rows"],
        "bad_rows": scored["bad_rows"],
        "seconds": round(wall, 2),
        "rows_per_s": round(scored["rows"] / wall),
    }
    result["targets_1_client"] = {"p50_ms": 5, "p99_ms": 20}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
