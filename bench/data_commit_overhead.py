"""What keel's git commit of each data version adds to an ingest, as a ratio.

Two fresh ``keel init`` workspaces take the same months, one ingest per month, in
alternating order: one with ``dvc.git_commit = true`` (the default), one with it off.
Each ingest is ``commit_batches`` (write the partition, ``dvc add``, ``dvc push``,
record the version, and the git commit in the first workspace), timed in-process so
Python and library start-up stay out of the measurement. The commit itself
(``commit_data_version``: git status + add + commit of two paths) is timed on its
own too. Ratio = median ingest with commits / median ingest without.

    python bench/data_commit_overhead.py [--months 2013-01..2013-06] [--rows 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="start", default="2013-01")
    ap.add_argument("--to", dest="end", default="2013-06")
    ap.add_argument("--rows", type=int, default=0, help="sample rows per month (0: whole months)")
    out = Path(__file__).parent / "results" / "data_commit_overhead.json"
    ap.add_argument("--out", type=Path, default=out)
    args = ap.parse_args()

    from keel.config.settings import load_settings
    from keel.data import workspace as ws
    from keel.workloads import init_workspace
    from keel.workloads.flights.data import month_range
    from tasks.data import build_batches, commit_batches

    root = Path(tempfile.mkdtemp(prefix="keel-bench-commit-"))
    overrides = {"data.sample_rows": args.rows}
    on = load_settings(init_workspace(root / "on"), overrides=overrides, environ={})
    off = load_settings(
        init_workspace(root / "off"), overrides={**overrides, "dvc.git_commit": False}, environ={}
    )
    timed_commit: list[float] = []
    real_commit = ws.commit_data_version

    def commit_timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return real_commit(*a, **kw)
        finally:
            if a[0].dvc.git_commit:
                timed_commit.append(time.perf_counter() - t0)

    ws.commit_data_version = commit_timed  # type: ignore[assignment]
    times: dict[str, list[float]] = {"commit": [], "no_commit": []}
    for i, month in enumerate(month_range(args.start, args.end)):
        order = [("commit", on), ("no_commit", off)]
        for label, settings in order if i % 2 == 0 else order[::-1]:
            batches = build_batches.fn(
                settings.workload, settings.data_store, settings.data.sample_rows, [month], {}
            )
            t0 = time.perf_counter()
            commit_batches.fn(settings.data_store, batches)
            times[label].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "ingests": len(times["commit"]),
        "median_ingest_s": med,
        "median_commit_s": statistics.median(timed_commit),
        "ratio_commit_over_no_commit": med["commit"] / med["no_commit"],
        "git_log": ws._run(["git", "log", "--oneline"], on.workspace).splitlines(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
