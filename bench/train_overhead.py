"""`keel train` end to end against a bare script that fits and evaluates the same model
on the same data: the share of the time that orchestration, tracking, validation,
gating and registration add.

The same workspace, data version and settings for both, alternating rounds:
- bare: a fresh Python process that reads the partitions, splits them, fits with
  ``keel.training.fit`` (the same Lightning model, trainer and seed) and computes the
  test metrics; no Prefect, MLflow, GX or DVC;
- keel (prefect): ``keel train`` with Prefect's own temporary server
  (``prefect.ephemeral = "prefect"``: what keel did before this bench);
- keel (managed): ``keel train`` with the command's own Prefect server, started as the
  command begins (``prefect.ephemeral = "managed"``, the default).
Every keel round registers a version and gates it against the champion, as a user's
retraining does. Overhead share = (keel - bare) / keel, on medians. Per-task times come
from Prefect's own task-run records (its database under PREFECT_HOME).

    python bench/train_overhead.py [--profile default|debug] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from command_overhead import task_seconds  # bench/ is this script's sys.path[0]

MODES = ("bare", "keel (prefect)", "keel (managed)")


def bare(workspace: str, profile: str | None) -> None:
    """The baseline, run in its own process: fit + evaluate, nothing else."""
    from keel.config.settings import load_settings
    from keel.model.objectives import classification_metrics
    from keel.model.training import fit
    from keel.workloads.flights import data as ds

    s = load_settings(workspace, profile=profile)
    from keel.data.partitions import list_partitions, read_partitions

    frame = read_partitions(list_partitions(s.data.dir))
    train, val, test = ds.split_frame(frame, s.split.val_pct, s.split.test_pct, s.split.salt)
    model = fit(train, val, s.features, s.train)
    metrics = classification_metrics(
        test[s.features.label].to_numpy(), model.predict_proba(test), model.threshold
    )
    print(json.dumps({"test/roc_auc": metrics["roc_auc"], "epochs": model.epochs_run}))


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default", help="default = the demo months; or debug")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bare", metavar="WORKSPACE", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    profile = None if args.profile == "default" else args.profile
    if args.bare:
        bare(args.bare, profile)
        return

    from keel.config.settings import load_settings
    from keel.workloads import init_workspace, load_workload

    home = Path(tempfile.mkdtemp(prefix="keel-bench-prefect-"))
    env = {"PREFECT_HOME": str(home)}
    ws = init_workspace(Path(tempfile.mkdtemp(prefix="keel-bench-overhead-")) / "ws")
    keel = [sys.executable, "-m", "keel.cli", "-w", str(ws), *(["-p", profile] if profile else [])]
    settings = load_settings(ws, profile=profile)
    months = settings.data.demo_batches or load_workload(settings).demo_batches()
    print(f"workspace {ws}: ingesting {months} (not timed) ...", flush=True)
    timed([*keel, "ingest", "--demo"], env)
    timed([*keel, "train"], env)  # warm-up: Prefect's database migrations, a first champion
    commands = {
        "bare": [sys.executable, __file__, "--profile", args.profile, "--bare", str(ws)],
        "keel (prefect)": [*keel, "train"],
        "keel (managed)": [*keel, "train"],
    }
    mode_env = {
        "bare": env,
        "keel (prefect)": {**env, "KEEL_PREFECT__EPHEMERAL": "prefect"},
        "keel (managed)": {**env, "KEEL_PREFECT__EPHEMERAL": "managed"},
    }
    times: dict[str, list[float]] = {m: [] for m in MODES}
    tasks: dict[str, list[dict[str, float]]] = {m: [] for m in MODES if m != "bare"}
    for r in range(args.rounds):
        for mode in MODES:
            times[mode].append(timed(commands[mode], mode_env[mode]))
            if mode != "bare":
                tasks[mode].append(task_seconds(home / "prefect.db", "keel-train"))
            print(f"round {r} {mode}: {times[mode][-1]:.1f} s", flush=True)
    med = {m: statistics.median(v) for m, v in times.items()}
    result = {
        "profile": args.profile,
        "months": months,
        "rounds": args.rounds,
        "seconds": times,
        "median_s": med,
        "overhead_share": {m: (med[m] - med["bare"]) / med[m] for m in MODES if m != "bare"},
        "managed_vs_prefect": med["keel (managed)"] / med["keel (prefect)"],
        "task_seconds_last_round": {m: v[-1] for m, v in tasks.items()},
    }
    out = args.out or Path(__file__).parent / "results" / f"train_overhead_{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2))


if __name__ == "__main__":
    main()
