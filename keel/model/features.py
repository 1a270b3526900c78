"""The table's preprocessing, travelling inside the model as JSON: vocabularies for the
categorical columns and scaling (+ missing flags) for the numeric ones. The mlp and conv
families use it; the bert family has its own tokenizer (keel.model.families.bert). Pure:
numpy and pandas, no files."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import pandas as pd

SMALL_FRAME = 64
# More numeric columns than this are read as one subset: for one digits row (64 columns)
# 4.5 ms column by column vs 0.5 ms as a subset; for flights' 13 columns they are equal.
WIDE = 16


def _as_str(values: np.ndarray) -> np.ndarray:
    """Values as str objects, the way the vocabulary stores them (ints: "5"; NaN: "nan")."""
    if values.dtype.kind in "iu":
        return values.astype(str).astype(object)
    return np.array([str(v) for v in values], dtype=object)


@dataclass(frozen=True)
class Preprocessor:
    """Raw feature rows -> (category codes, scaled numerics + missing flags).

    Category code 0 is "unknown"; numeric NaN becomes 0 (the training mean) with a
    1 in its missing flag.
    """

    categorical: list[str]
    numeric: list[str]
    vocab: dict[str, list[str]]
    mean: list[float]
    std: list[float]

    REQUIREMENTS: ClassVar[tuple[str, ...]] = ()  # distributions serving needs beyond keel's
    text_limits: ClassVar[dict[str, int]] = {}  # no text inputs

    @classmethod
    def fit(cls, frame: pd.DataFrame, categorical: list[str], numeric: list[str]) -> Preprocessor:
        vocab = {c: sorted(frame[c].dropna().astype(str).unique().tolist()) for c in categorical}
        x = frame[numeric].to_numpy(dtype=np.float64)
        mean = np.nan_to_num(np.nanmean(x, axis=0)) if len(x) else np.zeros(len(numeric))
        std = np.nanstd(x, axis=0) if len(x) else np.ones(len(numeric))
        std = np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)
        return cls(list(categorical), list(numeric), vocab, mean.tolist(), std.tolist())

    @property
    def cardinalities(self) -> list[int]:
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    @property
    def numeric_width(self) -> int:
        return 2 * len(self.numeric)

    @property
    def columns(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    @cached_property
    def _indexes(self) -> dict[str, pd.Index]:
        # built once per model: a pd.Categorical per call re-validates the categories,
        # which was 75% of a one-row prediction (bench/serve_latency.py)
        return {c: pd.Index(self.vocab[c], dtype=object) for c in self.categorical}

    @cached_property
    def _lookups(self) -> dict[str, dict[str, int]]:
        return {c: {v: i + 1 for i, v in enumerate(self.vocab[c])} for c in self.categorical}

    def encode_categorical(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) <= SMALL_FRAME:  # online requests: dict lookups beat get_indexer's set-up
            codes = [
                np.fromiter(
                    (self._lookups[c].get(v, 0) for v in _as_str(frame[c].to_numpy())),
                    dtype=np.int64,
                    count=len(frame),
                )
                for c in self.categorical
            ]
        else:
            codes = [self._indexes[c].get_indexer(_as_str(frame[c].to_numpy())) + 1 for c in self.categorical]
        return np.stack(codes, axis=1) if codes else np.zeros((len(frame), 0), np.int64)

    def encode_numeric(self, frame: pd.DataFrame) -> np.ndarray:
        if len(self.numeric) > WIDE:  # e.g. image pixels
            x = frame[self.numeric].to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            x = np.empty((len(frame), len(self.numeric)), dtype=np.float64)
            for j, c in enumerate(self.numeric):  # per column: no DataFrame subset per call
                x[:, j] = frame[c].to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(x)
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        z[missing] = 0.0
        return np.concatenate([z, missing], axis=1).astype(np.float32)

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_categorical(frame), self.encode_numeric(frame)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        return cls(**data)
