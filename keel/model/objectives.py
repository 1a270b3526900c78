"""Objectives: what a model's raw outputs mean — binary, multiclass, regression, and a
tag per word (tokens).

Each objective owns its loss, the width of the model's last layer, the label encoding
(string labels are mapped to codes, and the mapping travels inside the model), the
output columns of a prediction and its metrics (computed by scikit-learn); which way a
metric is better is keel.model.direction's (torch-free). Pure: numpy, pandas, torch and
scikit-learn only; no files, no MLflow. scikit-learn is imported by the metrics alone: loading a
registered model (serving, the servability check) never pays its ~3 s import.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn


class Objective(ABC):
    kind: ClassVar[str]
    headline: ClassVar[str]  # the metric a summary leads with

    def __init__(self, label: str, classes: Sequence[Any] = ()) -> None:
        self.label = label
        self.classes = list(classes)  # label values, in code order (classifiers)

    # ---------------------------------------------------------------- labels
    @classmethod
    def fit_labels(cls, label: str, y: pd.Series) -> Objective:
        return cls(label)

    def encode(self, y: pd.Series) -> np.ndarray:
        return y.to_numpy(dtype=np.float32)

    # ---------------------------------------------------------------- model
    @property
    @abstractmethod
    def width(self) -> int:
        """Outputs of the network's last layer."""

    @abstractmethod
    def loss(self) -> nn.Module: ...

    def target(self, y: torch.Tensor) -> torch.Tensor:
        """The encoded labels as the loss takes them."""
        return y

    def encode_inputs(self, y: pd.Series, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The labels as the loss takes them, given the encoded inputs ``(a, b)`` (a
        per-token objective aligns its tags with the tokens; the others ignore them)."""
        return self.encode(y)

    @abstractmethod
    def predict(self, raw: torch.Tensor, threshold: float = 0.5, inputs: Any = None) -> pd.DataFrame:
        """Raw network outputs -> the prediction table (its columns: ``output_columns``).
        ``inputs``: the encoded ``(a, b)`` the outputs came from (per-token objectives)."""

    @abstractmethod
    def metrics(self, y: pd.Series, out: pd.DataFrame) -> dict[str, float]:
        """Library-computed metrics of a prediction table against raw labels."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "classes": self.classes}


def classification_metrics(
    y_true: np.ndarray, prob: np.ndarray, threshold: float, pred: np.ndarray | None = None
) -> dict[str, float]:
    """Binary metrics (scikit-learn); ``pred`` overrides ``prob >= threshold`` (a loaded
    model's own labels)."""
    from sklearn import metrics as skm

    y_true = np.asarray(y_true).astype(int)
    pred = (prob >= threshold).astype(int) if pred is None else np.asarray(pred).astype(int)
    both = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        "precision": float(skm.precision_score(y_true, pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, pred, zero_division=0)),
        "f1": float(skm.f1_score(y_true, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y_true, prob)) if both else float("nan"),
        "log_loss": float(skm.log_loss(y_true, prob, labels=[0, 1])),
        "positive_rate": float(y_true.mean()) if len(y_true) else float("nan"),
        "rows": float(len(y_true)),
    }


class Binary(Objective):
    """Labels 0/1 (or two values, mapped in sorted order); outputs ``probability`` of the
    second class and the label column (the class, by a threshold)."""

    kind = "binary"
    headline = "roc_auc"

    @classmethod
    def fit_labels(cls, label: str, y: pd.Series) -> Binary:
        values = sorted(pd.unique(y.dropna()).tolist())
        if set(values) <= {0, 1}:
            return cls(label, [0, 1])
        if len(values) != 2:
            raise ValueError(f"label '{label}': a binary objective needs 2 values, found {len(values)}")
        return cls(label, values)

    def encode(self, y: pd.Series) -> np.ndarray:
        if self.classes == [0, 1]:
            return y.to_numpy(dtype=np.float32)
        return (y == self.classes[1]).to_numpy(dtype=np.float32)

    @property
    def width(self) -> int:
        return 1

    def loss(self) -> nn.Module:
        return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(1.0))

    def probability(self, raw: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(raw.reshape(-1)).double().numpy()

    def predict(self, raw: torch.Tensor, threshold: float = 0.5, inputs: Any = None) -> pd.DataFrame:
        prob = self.probability(raw)
        positive = prob >= threshold
        if self.classes == [0, 1]:
            label: Any = positive.astype(np.int64)
        else:
            label = np.where(positive, self.classes[1], self.classes[0])
        return pd.DataFrame({"probability": prob, self.label: label})

    def metrics(self, y: pd.Series, out: pd.DataFrame) -> dict[str, float]:
        pred = self.encode(out[self.label])
        return classification_metrics(self.encode(y), out["probability"].to_numpy(), 0.5, pred)


class Multiclass(Objective):
    """Labels of K values (sorted, mapped to codes 0..K-1); outputs one ``p_<class>``
    column per class and the label column (the most probable class)."""

    kind = "multiclass"
    headline = "accuracy"

    @classmethod
    def fit_labels(cls, label: str, y: pd.Series) -> Multiclass:
        values = sorted(pd.unique(y.dropna()).tolist())
        if len(values) < 2:
            raise ValueError(f"label '{label}': a multiclass objective needs 2+ values, found {len(values)}")
        return cls(label, values)

    def encode(self, y: pd.Series) -> np.ndarray:
        codes = pd.Categorical(y, categories=self.classes).codes.astype(np.int64)
        return codes  # -1: a class the model never saw

    @property
    def width(self) -> int:
        return len(self.classes)

    def loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def target(self, y: torch.Tensor) -> torch.Tensor:
        return y.long()

    def predict(self, raw: torch.Tensor, threshold: float = 0.5, inputs: Any = None) -> pd.DataFrame:
        prob = torch.softmax(raw.double(), dim=1).numpy()
        prob = prob / prob.sum(axis=1, keepdims=True)
        frame = pd.DataFrame({f"p_{c}": prob[:, i] for i, c in enumerate(self.classes)})
        frame[self.label] = np.asarray(self.classes, dtype=object)[prob.argmax(axis=1)]
        if all(isinstance(c, int | np.integer) for c in self.classes):
            frame[self.label] = frame[self.label].astype(np.int64)
        return frame

    def metrics(self, y: pd.Series, out: pd.DataFrame) -> dict[str, float]:
        from sklearn import metrics as skm

        y_true = self.encode(y)
        prob = out[[f"p_{c}" for c in self.classes]].to_numpy()
        pred = self.encode(out[self.label])
        labels = list(range(len(self.classes)))
        known = bool((y_true >= 0).all())
        seen = known and len(np.unique(y_true)) == len(self.classes)
        nan = float("nan")
        return {
            "accuracy": float(skm.accuracy_score(y_true, pred)),
            "macro_f1": float(skm.f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
            "log_loss": float(skm.log_loss(y_true, prob, labels=labels)) if known else nan,
            "roc_auc_ovr": float(skm.roc_auc_score(y_true, prob, multi_class="ovr")) if seen else nan,
            "rows": float(len(y_true)),
        }


class Regression(Objective):
    """A numeric label; outputs the ``prediction`` column. MSE loss on the label
    standardised with the training mean and std (kept in the model)."""

    kind = "regression"
    headline = "rmse"

    def __init__(self, label: str, classes: Sequence[Any] = (), mean: float = 0.0, std: float = 1.0):
        super().__init__(label, classes)
        self.mean, self.std = mean, std

    @classmethod
    def fit_labels(cls, label: str, y: pd.Series) -> Regression:
        values = y.to_numpy(dtype=np.float64)
        std = float(np.nanstd(values))
        return cls(label, (), float(np.nanmean(values)), std if std > 1e-12 else 1.0)

    def encode(self, y: pd.Series) -> np.ndarray:
        return ((y.to_numpy(dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    @property
    def width(self) -> int:
        return 1

    def loss(self) -> nn.Module:
        return nn.MSELoss()

    def predict(self, raw: torch.Tensor, threshold: float = 0.5, inputs: Any = None) -> pd.DataFrame:
        return pd.DataFrame({"prediction": raw.reshape(-1).double().numpy() * self.std + self.mean})

    def metrics(self, y: pd.Series, out: pd.DataFrame) -> dict[str, float]:
        from sklearn import metrics as skm

        y_true = y.to_numpy(dtype=np.float64)
        pred = out["prediction"].to_numpy(dtype=np.float64)
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, pred))),
            "mae": float(skm.mean_absolute_error(y_true, pred)),
            "r2": float(skm.r2_score(y_true, pred)) if len(y_true) > 1 else float("nan"),
            "rows": float(len(y_true)),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "mean": self.mean, "std": self.std}


IGNORE = -100  # a token with no tag of its own (special tokens, a word's later pieces, padding)


class _TokenLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(ignore_index=IGNORE)

    def forward(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(raw.reshape(-1, raw.shape[-1]), target.reshape(-1))


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The (type, first word, last word) spans of a BIO tag sequence, as conlleval and
    seqeval count them: a span starts at B-X, or at an I-X that does not continue an X."""
    spans: set[tuple[str, int, int]] = set()
    kind, start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        if kind is not None and not (prefix == "I" and name == kind):
            spans.add((kind, start, i - 1))
            kind = None
        if prefix == "B" or (prefix == "I" and kind is None):
            kind, start = name, i
    return spans


class Tokens(Objective):
    """A tag per word (token classification, BIO tags such as ``B-LOC``/``I-LOC``/``O``):
    the label column holds the tags, space-separated, one per whitespace-separated word
    of the text column. The network tags every token; a word's tag is read at its first
    piece. Outputs the label column (the tags of the words seen; words past the tokenizer's
    max_length get none). Metrics are entity-level (exact spans, as seqeval/conlleval
    count them) plus token accuracy."""

    kind = "tokens"
    headline = "entity_f1"

    @classmethod
    def fit_labels(cls, label: str, y: pd.Series) -> Tokens:
        tags = sorted({t for row in y.dropna() for t in str(row).split()} | {"O"})
        return cls(label, tags)

    def encode(self, y: pd.Series) -> np.ndarray:
        raise TypeError("a per-token objective encodes its tags against the tokens: encode_inputs")

    def encode_inputs(self, y: pd.Series, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``b``: keel.model.families.bert's word positions (k + 1 at word k's first piece, 0 padding,
        -1 elsewhere) -> tag codes at those tokens, IGNORE elsewhere."""
        index = {t: i for i, t in enumerate(self.classes)}
        out = np.full(b.shape, IGNORE, dtype=np.int64)
        for row, tags in enumerate(y.tolist()):
            words = str(tags).split() if isinstance(tags, str) else []
            for t in np.flatnonzero(b[row] > 0):
                k = int(b[row, t]) - 1
                if k < len(words):
                    out[row, t] = index.get(words[k], index["O"])
        return out

    @property
    def width(self) -> int:
        return len(self.classes)

    def loss(self) -> nn.Module:
        return _TokenLoss()

    def target(self, y: torch.Tensor) -> torch.Tensor:
        return y.long()

    def predict(self, raw: torch.Tensor, threshold: float = 0.5, inputs: Any = None) -> pd.DataFrame:
        if inputs is None:
            raise ValueError("a per-token objective needs the encoded inputs to place its tags")
        positions = np.asarray(inputs[1])
        best = raw.argmax(dim=-1).numpy()
        rows = []
        for row in range(len(best)):
            first = np.flatnonzero(positions[row] > 0)
            order = first[np.argsort(positions[row][first], kind="stable")]
            rows.append(" ".join(self.classes[int(c)] for c in best[row][order]))
        return pd.DataFrame({self.label: rows})

    def metrics(self, y: pd.Series, out: pd.DataFrame) -> dict[str, float]:
        true_rows = [str(t).split() if isinstance(t, str) else [] for t in y.tolist()]
        pred_rows = [str(t).split() for t in out[self.label].tolist()]
        tp = fp = fn = 0
        by_type: dict[str, list[int]] = {}
        same = total = 0
        for truth, pred in zip(true_rows, pred_rows, strict=True):
            pred = (pred + ["O"] * len(truth))[: len(truth)]  # untagged words (cut off): O
            same += sum(a == b for a, b in zip(truth, pred, strict=True))
            total += len(truth)
            t, p = entities(truth), entities(pred)
            tp, fp, fn = tp + len(t & p), fp + len(p - t), fn + len(t - p)
            for kind in {e[0] for e in t | p}:
                counts = by_type.setdefault(kind, [0, 0, 0])
                counts[0] += len({e for e in t & p if e[0] == kind})
                counts[1] += len({e for e in p - t if e[0] == kind})
                counts[2] += len({e for e in t - p if e[0] == kind})
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out_metrics = {
            "entity_f1": f1,
            "entity_precision": precision,
            "entity_recall": recall,
            "token_accuracy": same / total if total else float("nan"),
            "rows": float(len(true_rows)),
        }
        for kind, (k_tp, k_fp, k_fn) in sorted(by_type.items()):
            out_metrics[f"entity_f1_{kind}"] = (
                2 * k_tp / (2 * k_tp + k_fp + k_fn) if k_tp + k_fp + k_fn else 0.0
            )
        return out_metrics


KINDS: dict[str, type[Objective]] = {c.kind: c for c in (Binary, Multiclass, Regression, Tokens)}


def from_dict(data: dict[str, Any]) -> Objective:
    data = dict(data)
    cls = KINDS[data.pop("kind")]
    return cls(**data)
