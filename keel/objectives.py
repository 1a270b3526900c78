"""Objectives: what a model's raw outputs mean — binary, multiclass, regression.

Each objective owns its loss, the width of the model's last layer, the label encoding
(string labels are mapped to codes, and the mapping travels inside the model), the
output columns of a prediction, its metrics (computed by scikit-learn) and whether
each metric is better higher or lower. Pure: numpy, pandas, torch and scikit-learn
only; no files, no MLflow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from torch import nn

# Lower is better for these; every other metric keel computes is better higher.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae", "mse", "brier"})
# Bookkeeping metrics: counted, never compared.
NOT_COMPARED = frozenset({"rows", "positive_rate"})


def higher_is_better(metric: str) -> bool:
    """``test/log_loss`` -> False; ``val/roc_auc`` -> True (the last path part decides)."""
    return metric.rsplit("/", 1)[-1] not in LOWER_IS_BETTER


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

    @abstractmethod
    def predict(self, raw: torch.Tensor, threshold: float = 0.5) -> pd.DataFrame:
        """Raw network outputs -> the prediction table (its columns: ``output_columns``)."""

    @abstractmethod
    def metrics(self, y: pd.Series, out: pd.DataFrame) -> dict[str, float]:
        """Library-computed metrics of a prediction table against raw labels."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "classes": self.classes}


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

    def predict(self, raw: torch.Tensor, threshold: float = 0.5) -> pd.DataFrame:
        prob = self.probability(raw)
        positive = prob >= threshold
        if self.classes == [0, 1]:
            label: Any = positive.astype(np.int64)
        else:
            label = np.where(positive, self.classes[1], self.classes[0])
        return pd.DataFrame({"probability": prob, self.label: label})

    def metrics(self, y: pd.Series, out: pd.DataFrame) -> dict[str, float]:
        from keel.evaluation import classification_metrics

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

    def predict(self, raw: torch.Tensor, threshold: float = 0.5) -> pd.DataFrame:
        prob = torch.softmax(raw.double(), dim=1).numpy()
        prob = prob / prob.sum(axis=1, keepdims=True)
        frame = pd.DataFrame({f"p_{c}": prob[:, i] for i, c in enumerate(self.classes)})
        frame[self.label] = np.asarray(self.classes, dtype=object)[prob.argmax(axis=1)]
        if all(isinstance(c, int | np.integer) for c in self.classes):
            frame[self.label] = frame[self.label].astype(np.int64)
        return frame

    def metrics(self, y: pd.Series, out: pd.DataFrame) -> dict[str, float]:
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

    def predict(self, raw: torch.Tensor, threshold: float = 0.5) -> pd.DataFrame:
        return pd.DataFrame({"prediction": raw.reshape(-1).double().numpy() * self.std + self.mean})

    def metrics(self, y: pd.Series, out: pd.DataFrame) -> dict[str, float]:
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


KINDS: dict[str, type[Objective]] = {c.kind: c for c in (Binary, Multiclass, Regression)}


def from_dict(data: dict[str, Any]) -> Objective:
    data = dict(data)
    cls = KINDS[data.pop("kind")]
    return cls(**data)
