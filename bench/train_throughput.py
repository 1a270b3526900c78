"""Lightning training throughput vs a hand-written PyTorch loop, as a ratio.

Same model (keel.model.families.TabularNet inside keel's LightningModule), same data (one full
real month, encoded once into tensors), same batch size, optimizer, loss and seed.
Both sides run train-only epochs. The Lightning side is keel's own Trainer factory
and DataModule, exactly as `keel train` builds them (minus validation).

Throughput is taken per epoch at steady state: every epoch is timed, the first of
each round is dropped on both sides, and the ratio is taken between medians. Raw and
Lightning rounds alternate, so both share the machine's noise. Alongside it the bench
reports the whole-fit() ratio, which includes Lightning's one-off setup. Target:
steady-state ratio >= 0.95 at keel's configured batch size.

    python bench/train_throughput.py [--month 2013-07] [--epochs 8] [--rounds 5]
                                     [--batch-sizes 1024,4096]   # extra sizes to sweep
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--month", default="2013-07")
    ap.add_argument("--epochs", type=int, default=8, help="epochs per round (first is dropped)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--batch-sizes", default="1024,4096", help="sizes to sweep besides keel's configured train.batch_size"
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json")
    args = ap.parse_args()

    import lightning.pytorch as pl

    from keel.config.settings import load_settings
    from keel.model.families.mlp import TabularNet
    from keel.model.features import Preprocessor
    from keel.model.net import NetConfig
    from keel.model.objectives import Binary
    from keel.model.training import EncodedSplit, TabularDataModule, TabularModule, build_trainer
    from keel.workloads.flights.data import build_month, load_source

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    settings = load_settings(tempfile.mkdtemp(), environ={})
    base, feats = settings.train, settings.features
    torch.set_num_threads(base.num_threads)
    frame = build_month(*load_source(), args.month)
    pre = Preprocessor.fit(frame, feats.categorical, feats.numeric)
    data = EncodedSplit.encode(pre, frame, Binary(feats.label, [0, 1]))
    net_cfg = NetConfig(
        pre.cardinalities, pre.numeric_width, list(base.hidden), base.dropout, base.emb_dim_max
    )
    rows = len(data.y)

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.times.append(time.perf_counter() - self.start)

    def raw_round(batch_size: int) -> tuple[list[float], float]:
        torch.manual_seed(base.seed)
        net = TabularNet(net_cfg)
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=base.lr, weight_decay=base.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(1.0))
        gen = torch.Generator().manual_seed(base.seed)
        epochs, start = [], time.perf_counter()
        for _ in range(args.epochs):
            t = time.perf_counter()
            for idx in torch.randperm(rows, generator=gen).split(batch_size):
                loss = loss_fn(net(data.cat[idx], data.num[idx]), data.y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            epochs.append(time.perf_counter() - t)
        return epochs, time.perf_counter() - start

    def lightning_round(batch_size: int) -> tuple[list[float], float]:
        cfg = base.model_copy(
            update={"batch_size": batch_size, "max_epochs": args.epochs, "limit_train_batches": 1.0}
        )
        pl.seed_everything(cfg.seed, verbose=False)
        module = TabularModule(net_cfg, cfg.lr, cfg.weight_decay)
        timer = EpochTimer()
        trainer = build_trainer(cfg, validate=False, callbacks=[timer], enable_progress_bar=False)
        start = time.perf_counter()
        trainer.fit(module, datamodule=TabularDataModule(data, None, batch_size, cfg.seed))
        return timer.times, time.perf_counter() - start

    sizes = [base.batch_size] + [
        int(b) for b in args.batch_sizes.split(",") if b and int(b) != base.batch_size
    ]
    results = []
    for batch_size in sizes:
        raw_round(batch_size), lightning_round(batch_size)  # warm-up
        raw_epochs, lit_epochs, raw_fit, lit_fit = [], [], [], []
        for _ in range(args.rounds):
            e, f = raw_round(batch_size)
            raw_epochs += e[1:]
            raw_fit.append(f)
            e, f = lightning_round(batch_size)
            lit_epochs += e[1:]
            lit_fit.append(f)
        raw_s, lit_s = statistics.median(raw_epochs), statistics.median(lit_epochs)
        steps = -(-rows // batch_size)
        results.append(
            {
                "batch_size": batch_size,
                "configured": batch_size == base.batch_size,
                "steps_per_epoch": steps,
                "raw_samples_per_s": round(rows / raw_s),
                "lightning_samples_per_s": round(rows / lit_s),
                "ratio_steady": round(raw_s / lit_s, 3),
                "ratio_whole_fit": round(statistics.median(raw_fit) / statistics.median(lit_fit), 3),
                "lightning_overhead_ms_per_step": round((lit_s - raw_s) / steps * 1000, 3),
                "lightning_fit_setup_ms": round(
                    (statistics.median(lit_fit) - statistics.median(lit_epochs) * args.epochs) * 1000
                ),
            }
        )
    result = {
        "bench": "train_throughput",
        "month": args.month,
        "rows": rows,
        "epochs_per_round": args.epochs,
        "rounds": args.rounds,
        "torch_threads": base.num_threads,
        "target_steady_ratio": 0.95,
        "machine": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
        "by_batch_size": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    head = results[0]
    print(
        f"\nLightning / raw loop at the configured batch size {head['batch_size']}: "
        f"{head['ratio_steady']:.3f} steady-state (target >= 0.95), "
        f"{head['ratio_whole_fit']:.3f} for a whole {args.epochs}-epoch fit() -> {args.out}"
    )


if __name__ == "__main__":
    main()
