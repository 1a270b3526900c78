"""Held-out evaluation with scikit-learn: metrics, slice table and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm


def classification_metrics(
    y_true: np.ndarray, prob: np.ndarray, threshold: float, pred: np.ndarray | None = None
) -> dict[str, float]:
    """``pred`` overrides ``prob >= threshold`` (a loaded model's own labels)."""
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


def slice_table(
    frame: pd.DataFrame,
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    columns: list[str],
    pred: np.ndarray | None = None,
) -> pd.DataFrame:
    """Metrics per value of each slice column (e.g. per origin, per carrier)."""
    rows = []
    y_true = np.asarray(y_true)
    for column in columns:
        values = frame[column].astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            m = classification_metrics(
                y_true[mask], prob[mask], threshold, None if pred is None else np.asarray(pred)[mask]
            )
            rows.append({"slice": column, "value": value, **m})
    return pd.DataFrame(rows)


def save_plots(y_true: np.ndarray, prob: np.ndarray, threshold: float, directory: Path) -> list[Path]:
    """confusion_matrix.png, roc_curve.png, pr_curve.png under ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    y_true = np.asarray(y_true).astype(int)
    out = []
    plots = {
        "confusion_matrix.png": lambda ax: skm.ConfusionMatrixDisplay.from_predictions(
            y_true,
            (prob >= threshold).astype(int),
            display_labels=["on time", "delayed"],
            ax=ax,
            colorbar=False,
        ),
        "roc_curve.png": lambda ax: skm.RocCurveDisplay.from_predictions(
            y_true, prob, ax=ax, plot_chance_level=True
        ),
        "pr_curve.png": lambda ax: skm.PrecisionRecallDisplay.from_predictions(
            y_true, prob, ax=ax, plot_chance_level=True
        ),
    }
    for name, draw in plots.items():
        fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
        draw(ax)
        ax.set_title(name.removesuffix(".png").replace("_", " "))
        fig.tight_layout()
        fig.savefig(directory / name)
        plt.close(fig)
        out.append(directory / name)
    return out
