"""Lightning training throughput vs a hand-written PyTorch loop, as a ratio.

Same model (keel.net.TabularNet through keel's LightningModule), same data (one full
real month, encoded once), same batch size, optimizer, loss and seed. Both sides run
train-only epochs (no validation); the Lightning side is keel's own Trainer factory
and DataModule. Rounds alternate between the two to share the machine's noise; the
ratio of medians is reported. Target: >= 0.95.

    python bench/train_throughput.py [--month 2013-07] [--epochs 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=None, help="default: keel's train.batch_size")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json")
    args = ap.parse_args()

    import logging

    import lightning.pytorch as pl

    from keel.dataset import build_month, load_source
    from keel.features import Preprocessor
    from keel.net import NetConfig, TabularNet
    from keel.settings import load_settings
    from keel.training import EncodedSplit, FlightDelayModule, FlightsDataModule, build_trainer

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    settings = load_settings(tempfile.mkdtemp(), environ={})
    cfg, feats = settings.train, settings.features
    batch_size = args.batch_size or cfg.batch_size
    cfg = cfg.model_copy(update={"batch_size": batch_size, "max_epochs": args.epochs,
                                 "limit_train_batches": 1.0})
    torch.set_num_threads(cfg.num_threads)

    frame = build_month(*load_source(), args.month)
    pre = Preprocessor.fit(frame, feats.categorical, feats.numeric)
    data = EncodedSplit.encode(pre, frame, feats.label)
    net_cfg = NetConfig(pre.cardinalities, pre.numeric_width, list(cfg.hidden), cfg.dropout,
                        cfg.emb_dim_max)
    rows = len(data.y)

    def raw_round() -> float:
        torch.manual_seed(cfg.seed)
        net = TabularNet(net_cfg)
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(1.0))
        gen = torch.Generator().manual_seed(cfg.seed)
        start = time.perf_counter()
        for _ in range(args.epochs):
            for idx in torch.randperm(rows, generator=gen).split(batch_size):
                loss = loss_fn(net(data.cat[idx], data.num[idx]), data.y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return rows * args.epochs / (time.perf_counter() - start)

    def lightning_round() -> float:
        pl.seed_everything(cfg.seed, verbose=False)
        module = FlightDelayModule(net_cfg, cfg.lr, cfg.weight_decay)
        dm = FlightsDataModule(data, None, batch_size, cfg.seed)
        trainer = build_trainer(cfg, validate=False, enable_progress_bar=False)
        start = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        return rows * args.epochs / (time.perf_counter() - start)

    raw_round(), lightning_round()  # warm-up: allocator, import-time lazies
    raw, lit = [], []
    for _ in range(args.rounds):
        raw.append(raw_round())
        lit.append(lightning_round())
    ratio = statistics.median(lit) / statistics.median(raw)
    result = {
        "bench": "train_throughput", "month": args.month, "rows": rows, "batch_size": batch_size,
        "epochs_per_round": args.epochs, "rounds": args.rounds, "torch_threads": cfg.num_threads,
        "raw_samples_per_s": [round(x) for x in raw], "lightning_samples_per_s": [round(x) for x in lit],
        "raw_median": round(statistics.median(raw)), "lightning_median": round(statistics.median(lit)),
        "ratio_lightning_over_raw": round(ratio, 3), "target": 0.95,
        "machine": f"{platform.machine()} {torch.get_num_threads()} torch threads, {platform.python_version()}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"\nLightning / raw loop throughput: {ratio:.3f} (target >= 0.95) -> {args.out}")


if __name__ == "__main__":
    main()
