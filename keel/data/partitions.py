"""A workspace's data as partitions: one parquet file per batch under data/, written
atomically and byte-deterministically, and the stable hash split of rows into
train/val/test, and the splits a training reads (``make_splits``: the gate's holdout).
Generic: the split key comes from the workload; nothing here names one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from keel.errors import InputError

if TYPE_CHECKING:
    from keel.config.settings import SplitConfig
    from keel.data.types import Splits

_PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def partition_path(data_dir: Path, name: str) -> Path:
    """``data/<name>.parquet``; months are named YYYY-MM, file batches by their stem."""
    if not _PARTITION.match(name):
        raise InputError(f"partition name {name!r}: use letters, digits, '.', '_' or '-'")
    return data_dir / f"{name}.parquet"


def write_partition(frame: pd.DataFrame, path: Path) -> Path:
    """Write deterministic parquet bytes, atomically (temp file + rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(
            table, tmp, compression="zstd", compression_level=3, write_statistics=True, row_group_size=1 << 20
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def list_partitions(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.glob("*.parquet") if _PARTITION.match(p.stem))


def read_partition(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def read_partitions(paths: Iterable[Path]) -> pd.DataFrame:
    frames = [read_partition(p) for p in paths]
    if not frames:
        raise InputError("no partitions to read")
    return pd.concat(frames, ignore_index=True)


def split_buckets(frame: pd.DataFrame, salt: str, key: Sequence[str]) -> np.ndarray:
    """0..99 per row from a salted hash of the row's identity (``key`` columns; empty:
    every column): a row keeps its split as batches are added."""
    import hashlib

    missing = [c for c in key if c not in frame.columns]
    if missing:
        raise InputError(f"split key column(s) {missing} not in the data (columns: {list(frame.columns)})")
    hash_key = hashlib.sha256(salt.encode()).hexdigest()[:16]
    hashed = pd.util.hash_pandas_object(
        frame[list(key) or list(frame.columns)], index=False, hash_key=hash_key
    )
    return (hashed.to_numpy() % np.uint64(100)).astype(np.int64)


def holdout_batches(names: Sequence[str], scheme: str) -> tuple[list[str], list[str], str]:
    """(batches to train on, batches held out for the gate, why the scheme fell back).
    ``"newest"``: the last batch in name order (YYYY-MM, b01.. sort in time) is held out;
    with a single batch there is nothing older to train on, so every batch is split at
    random instead (the reason says so). ``"random"``: no batch is held out whole."""
    ordered = sorted(names)
    if scheme == "newest" and len(ordered) >= 2:
        return ordered[:-1], ordered[-1:], ""
    if scheme == "newest":
        return ordered, [], "one batch only: nothing older to train on, so the random split of it"
    return ordered, [], ""


def split_frame(
    frame: pd.DataFrame, val_pct: int, test_pct: int, salt: str, key: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, val, test) by stable hash buckets of the ``key`` columns."""
    bucket = split_buckets(frame, salt, key)
    test = bucket < test_pct
    val = (bucket >= test_pct) & (bucket < test_pct + val_pct)
    train = ~(test | val)
    return (
        frame[train].reset_index(drop=True),
        frame[val].reset_index(drop=True),
        frame[test].reset_index(drop=True),
    )


def make_splits(cfg: SplitConfig, frames: dict[str, pd.DataFrame], key: list[str]) -> Splits:
    """``split.holdout = "newest"``: train/val (hash split, ``val_pct``) from the older
    batches, test = every row of the newest batch, and train/val over all batches for the
    refit. ``"random"`` (or one batch): train/val/test by hash buckets of every batch."""
    from keel.data.types import Holdout, Splits
    older, newest, note = holdout_batches(list(frames), cfg.holdout)
    if not newest:
        everything = pd.concat([frames[n] for n in older], ignore_index=True)
        train, val, test = split_frame(everything, cfg.val_pct, cfg.test_pct, cfg.salt, key)
        return Splits(train, val, test, Holdout("random", tuple(older), len(test), note))
    past = pd.concat([frames[n] for n in older], ignore_index=True)
    train, val, _ = split_frame(past, cfg.val_pct, 0, cfg.salt, key)
    test = pd.concat([frames[n] for n in newest], ignore_index=True)
    refit = None
    if cfg.refit:
        everything = pd.concat([past, test], ignore_index=True)
        all_train, all_val, _ = split_frame(everything, cfg.val_pct, 0, cfg.salt, key)
        refit = (all_train, all_val)
    return Splits(train, val, test, Holdout("newest", tuple(newest), len(test)), refit)
