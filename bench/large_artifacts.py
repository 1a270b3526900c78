"""A model version of >= 1 GB through the scaled stack: the MLflow server on PostgreSQL with
proxied S3 artifacts (moto's S3 server), all on loopback (keel.ops.localstack). MB/s of the
same weights file, in one run:

- S3 direct: boto3's upload_file / download_file (its multipart transfer, 8 MB parts, 10
  threads) with the bucket's credentials: the baseline;
- MLflow, multipart: `MlflowClient.log_artifact` through the server, which offers MLflow's
  presigned multipart upload for its S3 store (the default for files >= 500 MB: 10 MB parts
  straight to S3, the server only signs), each in a fresh process whose peak RSS is kept;
- MLflow, one request: the same with MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=false (the body
  streams through the server: what times out behind gunicorn in mlflow issues 7564/8539/8963);
- keel: the whole model version (keel.registry.packaging.log_pyfunc: pyfunc, code, example)
  registered, then loaded in a fresh process from `models:/large/1` (peak RSS kept).

    python bench/large_artifacts.py [--gb 1.0] [--out bench/results/large_artifacts.json]
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh(script: str, env: dict[str, str]) -> tuple[float, float]:
    """``script`` in a new process without S3 credentials: (its seconds, its peak RSS in MiB)."""
    wrapper = (
        "import resource, subprocess, sys; "
        "rc = subprocess.run([sys.executable, '-c', sys.argv[1]]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
    )
    base = {k: v for k, v in os.environ.items() if k not in AWS}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, script], env={**base, **env}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"failed:\n{proc.stderr[-3000:]}")
    return seconds, int(proc.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "large_artifacts.json")
    args = ap.parse_args()

    from keel.config.settings import load_settings
    from keel.ops.localstack import ScaledBackends, large_text_model, register_large_model
    from keel.registry.tracking import client
    from keel.workloads import init_workspace

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="keel-bench-prefect-"))
    root = Path(tempfile.mkdtemp(prefix="keel-bench-large-"))
    (root / "servers").mkdir()
    backends = ScaledBackends(root / "servers", free_port).start()
    try:
        t0 = time.perf_counter()
        model = large_text_model(int(args.gb * 1024**3), root / "model")
        size = model["bytes"]
        mb = size / 1e6
        weights = model["artifacts"]["weights"]
        print(f"model: {mb:.0f} MB of weights, built in {time.perf_counter() - t0:.1f} s", flush=True)
        rows: dict[str, dict[str, float]] = {}

        t0 = time.perf_counter()
        backends.s3.upload_file(weights, "keel-mlflow", "baseline/weights.pt")
        up = time.perf_counter() - t0
        t0 = time.perf_counter()
        backends.s3.download_file("keel-mlflow", "baseline/weights.pt", str(root / "down.pt"))
        rows["S3 direct (boto3)"] = {"up_s": up, "down_s": time.perf_counter() - t0}
        (root / "down.pt").unlink()

        ws = init_workspace(root / "ws", '[workload]\nname = "synthetic"\n')
        settings = load_settings(ws, environ=backends.keel_env())
        c = client(settings.mlflow_store)
        exp = c.create_experiment("transport")
        url = {"MLFLOW_TRACKING_URI": backends.mlflow_url}
        for label, extra in (
            ("MLflow artifact, multipart (presigned)", {}),
            (
                "MLflow artifact, one request through the server",
                {"MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false"},
            ),
        ):
            run_id = c.create_run(exp).info.run_id
            up_s, up_rss = fresh(
                f"from mlflow import MlflowClient; MlflowClient().log_artifact({run_id!r}, {weights!r}, 'w')",
                {**url, **extra},
            )
            down_s, down_rss = fresh(
                f"from mlflow import MlflowClient; MlflowClient().download_artifacts({run_id!r}, 'w', "
                f"{str(root / label.split(',')[1].strip().replace(' ', '-'))!r})",
                url,
            )
            objects = backends.s3.list_objects_v2(Bucket="keel-mlflow")["Contents"]
            key = next(o["Key"] for o in objects if run_id in o["Key"] and o["Key"].endswith("w/weights.pt"))
            etag = backends.s3.head_object(Bucket="keel-mlflow", Key=key)["ETag"].strip('"')
            parts = (
                int(etag.split("-")[1]) if "-" in etag else 1
            )  # a multipart object's ETag counts its parts
            rows[label] = {
                "up_s": up_s,
                "up_rss_mib": up_rss,
                "down_s": down_s,
                "down_rss_mib": down_rss,
                "s3_parts": parts,
            }
            print(label, {k: round(v, 1) for k, v in rows[label].items()}, flush=True)

        t0 = time.perf_counter()
        version, _ = register_large_model(settings.mlflow_store, "large", model)
        register_s = time.perf_counter() - t0
        load_s, load_rss = fresh(
            "import mlflow, pandas as pd; "
            f"m = mlflow.pyfunc.load_model('models:/large/{version}'); "
            "print(m.predict(pd.DataFrame({'text': ['still answers']})))",
            url,
        )
        rows["keel model version (log_pyfunc + register; load in a fresh process)"] = {
            "up_s": register_s,
            "down_s": load_s,
            "down_rss_mib": load_rss,
        }
    finally:
        backends.stop()
    for r in rows.values():
        r["up_mb_s"], r["down_mb_s"] = mb / r["up_s"], mb / r["down_s"]
    base = rows["S3 direct (boto3)"]
    result = {
        "weights_mb": mb,
        "rows": rows,
        "ratio_vs_s3": {
            k: {"up": r["up_mb_s"] / base["up_mb_s"], "down": r["down_mb_s"] / base["down_mb_s"]}
            for k, r in rows.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{'path':<72}{'up MB/s':>9}{'down MB/s':>11}{'up RSS':>9}{'down RSS':>10}{'parts':>7}")
    for k, r in rows.items():
        print(
            f"{k:<72}{r['up_mb_s']:>9.0f}{r['down_mb_s']:>11.0f}"
            f"{r.get('up_rss_mib', float('nan')):>9.0f}{r.get('down_rss_mib', float('nan')):>10.0f}"
            f"{r.get('s3_parts', ''):>7}"
        )
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
