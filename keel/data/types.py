"""The data's domain types, as they flow between the data, training, registry and replay
tasks: a data version's partitions (``DatasetRef``), the train/val/test splits with the gate's
holdout (``Splits``, ``Holdout``) and a batch to ingest (``Batch``). Plain values: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from keel.data.workspace import DataVersion


@dataclass(frozen=True)
class Partition:
    path: Path
    rows: int


@dataclass(frozen=True)
class DatasetRef:
    """A DVC data version and the partitions it holds."""

    version: DataVersion
    partitions: tuple[Partition, ...]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    @property
    def partition_names(self) -> list[str]:
        return [p.path.stem for p in self.partitions]


@dataclass(frozen=True)
class Holdout:
    """The rows the gate compares challenger and champion on (``gate/gate.json``'s ``holdout``)."""

    scheme: str  # "newest": whole batches newer than every training row; "random": a hash share of each
    batches: tuple[str, ...]  # the batches the test rows come from
    rows: int
    note: str = ""  # why the scheme asked for was not used

    def to_json(self) -> dict[str, object]:
        return {"scheme": self.scheme, "batches": list(self.batches), "rows": self.rows, "note": self.note}


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    holdout: Holdout
    # "newest" holdout: train/val over every batch, the holdout too, for the refit of a
    # blessed challenger (tasks.train.refit_model); None: the model is never refit
    refit: tuple[pd.DataFrame, pd.DataFrame] | None = None

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass(frozen=True)
class Batch:
    """One batch to ingest: the partition it becomes, where it came from, its rows."""

    name: str
    source: str  # shown in validation errors: the user's file, or data/<month>.parquet
    frame: pd.DataFrame
