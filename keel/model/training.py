"""Lightning training: module, tensor-backed data module, trainer and fit()."""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchmetrics.classification import BinaryAUROC

from keel.errors import ConfigError
from keel.model import families
from keel.model.families import Family
from keel.model.net import Net, forward_rows
from keel.model.objectives import KINDS, Binary, Objective
from keel.model.runtime import adapters

if TYPE_CHECKING:
    from keel.config.settings import FeatureConfig, TrainConfig
    from keel.model.families.bert import TextPreprocessor
    from keel.model.features import Preprocessor


# ---------------------------------------------------------------- data
class TensorRows(Dataset):
    """Rows held as tensors; a batch is fetched with one fancy-index per tensor."""

    def __init__(self, *tensors: torch.Tensor):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index):  # single rows: only for debugging / generic tools
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, index: torch.Tensor):  # the DataLoader's batched fetch
        return tuple(t[index] for t in self.tensors)


def _as_batch(batch):
    return batch


class ShuffledBatches(Sampler):
    """Index tensors of one randperm per epoch; the generator is seeded once, so the
    sequence of epochs is the same on every run.

    Under DDP every rank draws the same permutation and takes its own stride of it
    (``rank::world``), cut to the same length on every rank, so all ranks run the same
    number of steps (a rank with one step more would hang the others' all-reduce)."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.rank, self.world = rank, world
        self.per_rank = n if world == 1 else n // world
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (self.per_rank + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        if self.world > 1:
            order = order[self.rank :: self.world][: self.per_rank]
        return iter(order.split(self.batch_size))


@dataclass(frozen=True)
class EncodedSplit:
    cat: torch.Tensor
    num: torch.Tensor
    y: torch.Tensor

    @classmethod
    def encode(
        cls, pre: Preprocessor | TextPreprocessor, frame: pd.DataFrame, objective: Objective
    ) -> EncodedSplit:
        cat, num = pre.transform(frame)
        y = objective.encode_inputs(frame[objective.label], cat, num)
        return cls(torch.from_numpy(cat), torch.from_numpy(num), torch.from_numpy(np.ascontiguousarray(y)))


def make_loader(
    split: EncodedSplit, batch_size: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1
) -> DataLoader:
    return DataLoader(
        TensorRows(split.cat, split.num, split.y),
        batch_sampler=ShuffledBatches(len(split.y), batch_size, seed, shuffle, rank, world),
        collate_fn=_as_batch,
    )


class TabularDataModule(pl.LightningDataModule):
    """Train batches are sharded across DDP ranks (the global batch stays ``batch_size``);
    every rank validates on the whole val split, so all ranks see the same val metrics and
    early stopping decides the same everywhere."""

    def __init__(
        self,
        train: EncodedSplit,
        val: EncodedSplit | None,
        batch_size: int,
        seed: int,
        num_threads: int = 1,
        eval_batch_size: int = 4096,
    ):
        super().__init__()
        self.train, self.val, self.batch_size, self.seed = train, val, batch_size, seed
        self.num_threads, self.eval_batch_size = num_threads, eval_batch_size

    def setup(self, stage: str) -> None:
        torch.set_num_threads(self.num_threads)  # again in each spawned DDP process

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        return make_loader(
            self.train, max(1, self.batch_size // world), self.seed, shuffle=True, rank=rank, world=world
        )

    def val_dataloader(self):
        if self.val is None:
            return []
        return make_loader(self.val, self.eval_batch_size, self.seed, shuffle=False)


# ---------------------------------------------------------------- model
class TabularModule(pl.LightningModule):
    """A family's net (keel.model.families: the MLP, a conv net for images, a BERT encoder for
    text, or a team's own plain module) trained with its objective's loss and AdamW; a binary
    objective also tracks val/auc."""

    def __init__(
        self,
        net: Net,
        lr: float,
        weight_decay: float,
        objective: Objective | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["objective", "net", "teacher"])
        self.net = net
        self.lr, self.weight_decay = lr, weight_decay
        self.objective = objective or Binary("label", [0, 1])
        self.loss: nn.Module = self.objective.loss()
        self.val_auc = BinaryAUROC() if isinstance(self.objective, Binary) else None
        # epoch accumulators, updated in place: re-assigning attributes of an nn.Module
        # each step goes through its slow __setattr__
        self._train_loss = torch.zeros(())
        self._train_rows = [0]

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return self.net(cat, num)

    def batch_loss(self, cat: torch.Tensor, num: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What a training step minimises: the objective's loss on the batch's labels."""
        return self.loss(self.net(cat, num), self.objective.target(y))

    def training_step(self, batch, batch_idx):
        cat, num, y = batch
        loss = self.batch_loss(cat, num, y)
        # accumulate instead of self.log per step: logging every step costs ~2.5 ms (STACK.md)
        self._train_loss.add_(loss.detach() * len(y))
        self._train_rows[0] += len(y)
        return loss

    def on_train_epoch_end(self) -> None:
        if self._train_rows[0]:
            self.log("train/loss", self._train_loss / self._train_rows[0], sync_dist=True)
        self._train_loss.zero_()
        self._train_rows[0] = 0

    def validation_step(self, batch, batch_idx):
        cat, num, y = batch
        logits = self.net(cat, num)
        loss = self.loss(logits, self.objective.target(y))
        self.log("val/loss", loss, on_epoch=True, batch_size=len(y), sync_dist=True)
        if self.val_auc is not None:
            self.val_auc.update(torch.sigmoid(logits), y.long())
            self.log("val/auc", self.val_auc, on_epoch=True)

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]  # an adapter's base is frozen
        return torch.optim.AdamW(trainable, lr=self.lr, weight_decay=self.weight_decay)


class DistillModule(TabularModule):
    """A pruned net's recovery that copies the net it was pruned from (logit matching): on
    every batch, train and val alike, the loss is the mean squared difference between its raw
    outputs and the teacher's (frozen, in eval mode), so the epoch kept is the closest copy;
    what the parity gate measures (agreement, output difference) is what it learns."""

    def __init__(self, net: Net, teacher: Net, lr: float, weight_decay: float, objective: Objective):
        super().__init__(net, lr, weight_decay, objective)
        self.teacher = teacher.requires_grad_(False)  # its parameters: not in the optimizer

    def batch_loss(self, cat: torch.Tensor, num: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()  # Lightning's train() reaches it too: no dropout in the targets
        with torch.no_grad():
            target = self.teacher(cat, num)
        return nn.functional.mse_loss(self.net(cat, num), target)

    def validation_step(self, batch, batch_idx):
        cat, num, y = batch
        self.log("val/loss", self.batch_loss(cat, num, y), on_epoch=True, batch_size=len(y), sync_dist=True)


class KeepBestWeights(pl.Callback):
    """Keep the weights of the epoch with the lowest monitored value, in memory."""

    def __init__(self, monitor: str = "val/loss"):
        self.monitor = monitor
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, module: TabularModule) -> None:  # type: ignore[override]
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and (self.best is None or float(value) < self.best):
            self.best, self.best_epoch = float(value), trainer.current_epoch
            self.state = copy.deepcopy(trained_net(module).state_dict())

    def on_fit_end(self, trainer: pl.Trainer, module: TabularModule) -> None:  # type: ignore[override]
        """Put the best weights into the module and the summary into callback_metrics:
        both travel back to the launching process when DDP ran in spawned processes."""
        if self.state is not None:
            trained_net(module).load_state_dict(self.state)
        trainer.callback_metrics["keel/epochs_run"] = torch.tensor(float(trainer.current_epoch))
        if self.best is not None and self.best_epoch is not None:
            trainer.callback_metrics["keel/best_epoch"] = torch.tensor(float(self.best_epoch))
            trainer.callback_metrics["keel/best_val_loss"] = torch.tensor(self.best)


def build_trainer(
    cfg: TrainConfig,
    *,
    logger: Any = False,
    callbacks: list | None = None,
    validate: bool = True,
    **overrides: Any,
) -> pl.Trainer:
    from keel import progress

    callbacks = list(callbacks or [])
    bar = sys.stderr.isatty()
    shown = progress.fit_callback()
    if shown is not None:  # under the keel command: a bar on its terminal, else one line per epoch
        callbacks.append(shown)
        bar = isinstance(shown, pl.callbacks.ProgressBar)
    kwargs: dict[str, Any] = dict(
        max_epochs=cfg.max_epochs,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=1.0 if validate else 0,
        accelerator=cfg.accelerator,
        devices=1 if cfg.accelerator == "cpu" else cfg.devices,  # CPU: more processes only under ddp
        precision=cfg.precision,
        deterministic=True,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bar,
        num_sanity_val_steps=0,
        log_every_n_steps=50,  # the module itself logs at epoch level only
    )
    kwargs.update(distributed(cfg))
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def distributed(cfg: TrainConfig) -> dict[str, Any]:
    """Trainer arguments for ``train.strategy``: nothing for "auto"; for "ddp", Lightning's
    DDPStrategy over gloo (CPU) with ``devices`` processes per node on ``num_nodes`` nodes.
    ``ddp_start_method = "spawn"`` has Lightning start the processes from this one;
    "popen" is for an outside launcher (torchrun, a Kubernetes job per node)."""
    if cfg.strategy != "ddp":
        return {}
    from lightning.pytorch.strategies import DDPStrategy

    return dict(
        strategy=DDPStrategy(process_group_backend="gloo", start_method=cfg.ddp_start_method),
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        use_distributed_sampler=False,
    )


# ---------------------------------------------------------------- fit
def trained_net(module: pl.LightningModule) -> Net:
    """The network a training registers: keel's module trains ``.net``; a team's own
    LightningModule is the network itself."""
    return module.net if isinstance(module, TabularModule) else module


@dataclass
class TrainedModel:
    preprocessor: Any  # the family's preprocessing (keel.model.features.Preprocessor, a tokenizer...)
    net: Net
    threshold: float
    epochs_run: int
    best_epoch: int | None
    best_val_loss: float | None
    objective: Objective
    family: Family

    @torch.no_grad()
    def raw(self, frame: pd.DataFrame) -> torch.Tensor:
        return self._raw(*self.preprocessor.transform(frame))

    def _raw(self, cat, num) -> torch.Tensor:
        self.net.eval()
        return forward_rows(self.net, torch.from_numpy(cat), torch.from_numpy(num))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The prediction table, as the registered model answers it."""
        cat, num = self.preprocessor.transform(frame)
        return self.objective.predict(self._raw(cat, num), self.threshold, inputs=(cat, num))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Binary objectives: the probability of the positive class."""
        if not isinstance(self.objective, Binary):
            raise TypeError(f"predict_proba is for binary objectives, not {self.objective.kind}")
        return self.objective.probability(self.raw(frame))


def fit(
    train: pd.DataFrame,
    val: pd.DataFrame,
    features: FeatureConfig,
    cfg: TrainConfig,
    *,
    objective: str = "binary",
    family: Family | None = None,
    logger: Any = False,
    callbacks: Sequence[Any] = (),
) -> TrainedModel:
    """Train deterministically on CPU; early stopping on val/loss; best weights kept.
    ``objective``: binary, multiclass or regression (keel.model.objectives); ``family``: the
    network family (keel.model.families; default keel's MLP). A family whose network is a
    LightningModule of its own is trained as it is; any other net by keel's module."""
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # keel logs per epoch on purpose; Lightning's own deprecation chatter is not the user's concern
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
    torch.set_num_threads(cfg.num_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    obj = KINDS[objective].fit_labels(features.label, train[features.label])
    family = family or families.family(families.DEFAULT)
    family.check(features)
    pre = family.fit_preprocessor(train, features)
    net = family.build(obj.width, pre, cfg, pretrained=family.pretrained)
    if cfg.adapter:  # the pre-trained module frozen, a LoRA adapter on it (peft)
        net = adapters.attach(family, net, cfg.adapter, cfg.lora.model_dump())
    trained, done = _train(family, net, pre, obj, train, val, cfg, logger, callbacks)
    model = TrainedModel(
        pre,
        trained,
        cfg.threshold,
        int(done["keel/epochs_run"]),
        int(done["keel/best_epoch"]) if "keel/best_epoch" in done else None,
        float(done["keel/best_val_loss"]) if "keel/best_val_loss" in done else None,
        obj,
        family,
    )
    if isinstance(obj, Binary) and cfg.threshold_policy == "max_f1" and len(val):
        model.threshold = max_f1_threshold(obj.encode(val[features.label]), model.predict_proba(val))
    return model


def _train(
    family: Family,
    net: Net,
    pre: Any,
    obj: Objective,
    train: pd.DataFrame,
    val: pd.DataFrame,
    cfg: TrainConfig,
    logger: Any = False,
    callbacks: Sequence[Any] = (),
) -> tuple[Net, dict[str, Any]]:
    """Lightning's fit of ``net`` on ``train`` (early stopping on ``val``), the epoch with the
    lowest val/loss kept: (the net on CPU in eval mode, the trainer's callback metrics)."""
    module = net if isinstance(net, pl.LightningModule) else TabularModule(net, cfg.lr, cfg.weight_decay, obj)
    data = TabularDataModule(
        EncodedSplit.encode(pre, train, obj),
        EncodedSplit.encode(pre, val, obj),
        cfg.batch_size,
        cfg.seed,
        cfg.num_threads,
        cfg.eval_batch_size,
    )
    best = KeepBestWeights("val/loss")
    stop = pl.callbacks.EarlyStopping("val/loss", patience=cfg.patience, mode="min")
    trainer = build_trainer(cfg, logger=logger, callbacks=[best, stop, *callbacks])
    try:
        trainer.fit(module, datamodule=data)  # the best weights are in the net afterwards
    except RuntimeError as exc:
        if not isinstance(module, TabularModule) and "val/loss" in str(exc):  # a team's own LightningModule
            raise ConfigError(
                f"net family {family.name!r} ({type(net).__module__}.{type(net).__qualname__}): its "
                "LightningModule logs no 'val/loss'; keel keeps the epoch with the lowest one "
                "(self.log('val/loss', ...) in validation_step)"
            ) from exc
        raise
    trained = trained_net(module)
    trained.cpu().eval()  # predictions, evaluation and the saved weights: CPU
    return trained, dict(trainer.callback_metrics)


def fine_tune(
    family: Family,
    net: Net,
    preprocessor: Any,
    objective: Objective,
    train: pd.DataFrame,
    val: pd.DataFrame,
    cfg: TrainConfig,
    teacher: Net | None = None,
) -> Net:
    """``net`` (already trained: a pruned net, keel compress's recovery) trained on for at
    most ``cfg.max_epochs`` epochs as ``fit`` trains, with the same seed and optimizer; the
    epoch with the lowest val/loss kept. The loss is the objective's, or with a ``teacher``
    (the net it was pruned from) the distance to the teacher's outputs (DistillModule).
    Deterministic on CPU: a replay rebuilds it."""
    torch.set_num_threads(cfg.num_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    net.train()
    if teacher is not None:
        if isinstance(net, pl.LightningModule):
            raise ConfigError(
                f"compress.recovery = 'distill': net family {family.name!r} trains as its own "
                "LightningModule, whose loss keel does not replace; use 'labels'"
            )
        import warnings

        module = DistillModule(net, teacher, cfg.lr, cfg.weight_decay, objective)
        with warnings.catch_warnings():  # the teacher is in eval mode on purpose
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
            return _train(family, module, preprocessor, objective, train, val, cfg)[0]
    return _train(family, net, preprocessor, objective, train, val, cfg)[0]


def probe(
    family: Family, frame: pd.DataFrame, features: FeatureConfig, objective: str, rows: int = 4
) -> None:
    """A team's own family tried on a few rows before any run opens: its preprocessing must
    give two arrays with a row each, its network must answer the objective's width (one value
    per row, or ``(rows, width)``). Anything else is a ConfigError naming the family's class."""
    cls = type(family)
    who = f"net family {family.name!r} ({cls.__module__}:{cls.__qualname__})"
    head = frame.head(max(rows, 2)).reset_index(drop=True)
    obj = KINDS[objective].fit_labels(features.label, frame[features.label])
    try:
        pre = family.fit_preprocessor(frame, features)
        arrays = pre.transform(head)
    except Exception as exc:
        raise ConfigError(
            f"{who}: its preprocessing failed on the train rows: {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(arrays, tuple) and len(arrays) == 2):
        raise ConfigError(
            f"{who}: its preprocessing's transform() must return two arrays (a, b), "
            f"got {type(arrays).__name__}"
        )
    shapes = [tuple(np.shape(x)) for x in arrays]
    if any(len(s) == 0 or s[0] != len(head) for s in shapes):
        raise ConfigError(
            f"{who}: its preprocessing gave arrays of shapes {shapes} for {len(head)} rows (rows first)"
        )
    net = family.build(obj.width, pre)
    net.eval()
    try:
        with torch.no_grad():
            raw = net(*(torch.from_numpy(np.ascontiguousarray(x)) for x in arrays))
    except Exception as exc:
        raise ConfigError(f"{who}: its network failed on {shapes}: {type(exc).__name__}: {exc}") from exc
    shape = tuple(raw.shape)
    fits = shape[:1] == (len(head),) and (
        shape[-1] == obj.width if obj.width > 1 else raw.numel() == len(head)
    )
    if not fits:
        want = f"({len(head)},)" if obj.width == 1 else f"({len(head)}, {obj.width})"
        raise ConfigError(
            f"{who}: its network answers shape {shape} for {len(head)} rows; the {obj.kind} objective "
            f"needs {want} ({obj.width} output{'s' if obj.width > 1 else ''})"
        )


def max_f1_threshold(y_true: np.ndarray, prob: np.ndarray) -> float:
    """The probability threshold that maximises F1 on (validation) data."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y_true, prob)
    if len(thresholds) == 0:
        return 0.5
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))])
