"""Evaluation tasks: held-out metrics (pure) and their MLflow artifacts (edge)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from keel.errors import retry_transient
from keel.settings import Settings
from tasks.data import Splits


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # flat names: "test/f1", "val/roc_auc", ...
    slices: pd.DataFrame  # per-slice metrics on the test split
    y_test: np.ndarray
    prob_test: np.ndarray
    threshold: float


@task(name="evaluate-model", cache_policy=NONE)
def evaluate_model(settings: Settings, model, splits: Splits) -> Evaluation:
    """Metrics on val and the held-out test split with scikit-learn, plus slices."""
    from keel.evaluation import classification_metrics, slice_table

    label, thr = settings.features.label, model.threshold
    metrics: dict[str, float] = {}
    probs = {name: model.predict_proba(frame) for name, frame in (("val", splits.val), ("test", splits.test))}
    for name, frame in (("val", splits.val), ("test", splits.test)):
        y = frame[label].to_numpy()
        metrics.update({f"{name}/{k}": v for k, v in classification_metrics(y, probs[name], thr).items()})
    prob_test = probs["test"]
    y_test = splits.test[label].to_numpy()
    slices = slice_table(splits.test, y_test, prob_test, thr, settings.features.slices)
    return Evaluation(metrics, slices, y_test, prob_test, thr)


@task(
    name="log-evaluation",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def log_evaluation(settings: Settings, evaluation: Evaluation, run_id: str) -> list[str]:
    """Metrics, PNG plots and the slice table into the MLflow run."""
    import math

    from mlflow.entities import Metric

    from keel import tracking
    from keel.evaluation import save_plots

    client = tracking.client(settings)
    now = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in sorted(evaluation.metrics.items()) if not math.isnan(v)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plots = save_plots(evaluation.y_test, evaluation.prob_test, evaluation.threshold, out / "plots")
        evaluation.slices.to_csv(out / "slices.csv", index=False, float_format="%.6g")
        client.log_artifacts(run_id, str(out / "plots"), "evaluation/plots")
        client.log_artifact(run_id, str(out / "slices.csv"), "evaluation")
    return [f"evaluation/plots/{p.name}" for p in plots] + ["evaluation/slices.csv"]
