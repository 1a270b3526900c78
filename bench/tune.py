"""keel tune, measured in one run on this machine:

1. throughput: trials/hour of the same study with 1 and with 2 concurrent trial processes
   (Prefect's ProcessPoolTaskRunner), the ratio 2-vs-1 on this machine's cores;
2. per workload: the default config trained by keel-train vs `keel tune`'s best config
   trained the same way, on the same data version and held-out rows (the gate's test
   metric), with the trials run and the wall time.

    python bench/tune.py [--workloads synthetic,flights,digits,text] [--trials 8] [--profile debug]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

WORKSPACES = {
    "synthetic": '[workload]\nname = "synthetic"\n',
    "flights": '[workload]\nname = "flights"\n',
    "digits": '[workload]\nname = "digits"\n',
    "text": '[workload]\nname = "text"\n',
}


def _workspace(name: str, profile: str | None):
    from flows.ingest import ingest_flow
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace, load_workload

    ws = init_workspace(Path(tempfile.mkdtemp(prefix=f"bench-tune-{name}-")) / "ws", WORKSPACES[name])
    s = load_settings(ws, profile=profile, environ={})
    ingest_flow(s, load_workload(s).demo_batches())
    return s


def _tune(s, train_best=True, **overrides):
    from flows.tune import tune_flow
    from tasks.tune import task_runner

    s = s.with_overrides(overrides)
    start = time.perf_counter()
    out = tune_flow.with_options(task_runner=task_runner(s.tune))(s, train_best=train_best)
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="synthetic,flights,digits,text")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--profile", default="debug")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tune.json")
    ap.add_argument("--no-throughput", action="store_true", help="skip part 1 (1 vs 2 concurrent trials)")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    results: dict = {"cpus": os.cpu_count(), "trials": args.trials, "profile": args.profile, "workloads": {}}

    # 1. throughput: the same study size, one then two trial processes
    for name in [] if args.no_throughput else ["synthetic"]:
        results["throughput"] = _throughput(name, args)

    # 2. default vs tuned, per workload
    for name in args.workloads.split(","):
        results["workloads"][name] = _default_vs_tuned(name, args)
        print(name, json.dumps(results["workloads"][name]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def _throughput(name: str, args) -> dict:
    s = _workspace(name, args.profile)
    rates = {}
    for n in (1, 2):
        overrides = {"tune.concurrency": n, "tune.trials": args.trials, "tune.study": f"rate-{n}"}
        _, wall = _tune(s, train_best=False, **overrides)  # the trials alone
        rates[n] = {"wall_s": round(wall, 1), "trials_per_hour": round(3600 * args.trials / wall, 1)}
        print(f"concurrency {n}: {args.trials} trials in {wall:.1f} s")
    return {
        **{str(k): v for k, v in rates.items()},
        "ratio_2_vs_1": round(rates[1]["wall_s"] / rates[2]["wall_s"], 2),
    }


def _default_vs_tuned(name: str, args) -> dict:
    """The default config trained, then the study and its best config trained; the test
    metric of both on the same data version and held-out rows."""
    from flows.train import train_flow
    from keel.model.objectives import KINDS
    from keel.registry.tracking import client
    from keel.workloads import load_workload

    s = _workspace(name, args.profile)
    metric = f"test/{KINDS[load_workload(s).objective()].headline}"
    start = time.perf_counter()
    default = train_flow(s)
    default_wall = time.perf_counter() - start
    out, wall = _tune(s, **{"tune.trials": args.trials})
    c = client(s.mlflow_store)
    d = c.get_run(default.run_id).data.metrics[metric]
    t = c.get_run(out.registered.run_id).data.metrics[metric]
    return {
        "metric": metric,
        "default": round(d, 4),
        "tuned": round(t, 4),
        "delta": round(t - d, 4),
        "trials": out.summary["trials"],
        "best_trial": out.summary["best_trial"],
        "best_params": out.summary["best_params"],
        "tune_wall_s": round(wall, 1),
        "default_train_wall_s": round(default_wall, 1),
        "tuned_version_decision": out.registered.decision,
    }


if __name__ == "__main__":
    main()
