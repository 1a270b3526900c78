"""Held-out evaluation with scikit-learn: the slice table, the slice gaps and the plots of each
objective (the metrics themselves are the objectives', keel.model.objectives)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from keel.model.objectives import Binary, Multiclass, Objective


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # flat names: "test/f1", "val/roc_auc", ...
    slices: pd.DataFrame  # per-slice metrics on the test split
    y_test: pd.Series  # the test split's labels, as raw values
    out_test: pd.DataFrame  # the model's prediction table on the test split
    objective: Objective


MISSING = "(missing)"  # the slice of rows with no value in a slice column


def slice_table(
    frame: pd.DataFrame, y: pd.Series, out: pd.DataFrame, objective: Objective, columns: list[str]
) -> pd.DataFrame:
    """The objective's metrics per value of each slice column (e.g. per origin); rows
    whose value is missing (a suite may allow it) are the slice ``MISSING``."""
    rows = []
    y = y.reset_index(drop=True)
    out = out.reset_index(drop=True)
    for column in columns:
        present = frame[column].notna().to_numpy()
        values = np.where(present, frame[column].astype(object).astype(str).to_numpy(), MISSING)
        for value in sorted(set(values)):
            mask = values == value
            m = objective.metrics(y[mask], out[mask])
            rows.append({"slice": column, "value": value, **m})
    return pd.DataFrame(rows)


def slice_gaps(slices: pd.DataFrame, metric: str, min_rows: int) -> dict[str, float]:
    """``{"slice_gap/<column>": largest - smallest <metric>}`` over the values of each slice
    column with at least ``min_rows`` rows and a defined metric (a fairness bound: the gate
    can cap it with ``max``). A column with fewer than two such values has no gap (NaN)."""
    gaps: dict[str, float] = {}
    if slices.empty:
        return gaps
    for column, part in slices.groupby("slice", sort=True):
        values = part.loc[part["rows"] >= min_rows, metric].dropna()
        gaps[f"slice_gap/{column}"] = float(values.max() - values.min()) if len(values) > 1 else float("nan")
    return gaps


def save_plots(y: pd.Series, out: pd.DataFrame, objective: Objective, directory: Path) -> list[Path]:
    """The objective's plots as PNGs under ``directory``: binary: confusion matrix, ROC
    and PR curves; multiclass: confusion matrix; regression: predicted vs actual and
    the residuals; tokens: entity-level F1 per entity type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Any] = {}
    if isinstance(objective, Binary):
        y_true = objective.encode(y).astype(int)
        prob = out["probability"].to_numpy()
        pred = objective.encode(out[objective.label]).astype(int)
        names = [f"{objective.label}={c}" for c in objective.classes]
        plots = {
            "confusion_matrix.png": lambda ax: skm.ConfusionMatrixDisplay.from_predictions(
                y_true, pred, labels=[0, 1], display_labels=names, ax=ax, colorbar=False
            ),
            "roc_curve.png": lambda ax: skm.RocCurveDisplay.from_predictions(
                y_true, prob, ax=ax, plot_chance_level=True
            ),
            "pr_curve.png": lambda ax: skm.PrecisionRecallDisplay.from_predictions(
                y_true, prob, ax=ax, plot_chance_level=True
            ),
        }
    elif isinstance(objective, Multiclass):
        codes = list(range(len(objective.classes)))
        plots = {
            "confusion_matrix.png": lambda ax: skm.ConfusionMatrixDisplay.from_predictions(
                objective.encode(y),
                objective.encode(out[objective.label]),
                labels=codes,
                display_labels=[str(c) for c in objective.classes],
                ax=ax,
                colorbar=False,
            )
        }
    elif objective.kind == "tokens":
        scores = {
            k.removeprefix("entity_f1_"): v
            for k, v in objective.metrics(y, out).items()
            if k.startswith("entity_f1_")
        }

        def bars(ax):
            ax.bar(list(scores), list(scores.values()), color="tab:blue")
            ax.set_ylim(0, 1)
            ax.set_ylabel("entity-level F1")

        plots = {"entity_f1_by_type.png": bars}
    else:
        actual, predicted = y.to_numpy(dtype=float), out["prediction"].to_numpy(dtype=float)
        plots = {
            "predicted_vs_actual.png": lambda ax: skm.PredictionErrorDisplay.from_predictions(
                actual, predicted, kind="actual_vs_predicted", ax=ax
            ),
            "residuals.png": lambda ax: skm.PredictionErrorDisplay.from_predictions(
                actual, predicted, kind="residual_vs_predicted", ax=ax
            ),
        }
    written = []
    for name, draw in plots.items():
        fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
        draw(ax)
        ax.set_title(name.removesuffix(".png").replace("_", " "))
        fig.tight_layout()
        fig.savefig(directory / name)
        plt.close(fig)
        written.append(directory / name)
    return written
