"""Evaluation tasks: held-out metrics (pure) and their MLflow artifacts (edge)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import FeatureConfig, MlflowStore
from keel.data.types import Splits
from keel.errors import retry_transient
from keel.model.evaluation import Evaluation


@task(name="evaluate-model", cache_policy=NONE)
def evaluate_model(features: FeatureConfig, model, splits: Splits) -> Evaluation:
    """The objective's metrics (scikit-learn) on val and the held-out test split, plus slices
    and the headline metric's largest gap across each slice column (test/slice_gap/<column>)."""
    from keel.model.evaluation import slice_gaps, slice_table

    label, objective = features.label, model.objective
    metrics: dict[str, float] = {}
    outs = {name: model.predict(frame) for name, frame in (("val", splits.val), ("test", splits.test))}
    for name, frame in (("val", splits.val), ("test", splits.test)):
        metrics.update({f"{name}/{k}": v for k, v in objective.metrics(frame[label], outs[name]).items()})
    y_test = splits.test[label]
    slices = slice_table(splits.test, y_test, outs["test"], objective, features.slices)
    gaps = slice_gaps(slices, objective.headline, features.slice_min_rows)
    metrics.update({f"test/{k}": v for k, v in gaps.items()})
    return Evaluation(metrics, slices, y_test, outs["test"], objective)


@task(
    name="log-evaluation",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def log_evaluation(store: MlflowStore, evaluation: Evaluation, run_id: str) -> list[str]:
    """Metrics, PNG plots and the slice table into the MLflow run."""
    import math

    from mlflow.entities import Metric

    from keel.model.evaluation import save_plots
    from keel.registry import tracking

    client = tracking.client(store)
    now = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in sorted(evaluation.metrics.items()) if not math.isnan(v)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plots = save_plots(evaluation.y_test, evaluation.out_test, evaluation.objective, out / "plots")
        evaluation.slices.to_csv(out / "slices.csv", index=False, float_format="%.6g")
        client.log_artifacts(run_id, str(out / "plots"), "evaluation/plots")
        client.log_artifact(run_id, str(out / "slices.csv"), "evaluation")
    return [f"evaluation/plots/{p.name}" for p in plots] + ["evaluation/slices.csv"]
