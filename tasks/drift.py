"""Drift monitor tasks: the champion's training data as reference, scores always logged."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import DataStore, DriftConfig, FeatureConfig, MlflowStore
from keel.data.drift import DriftReport
from keel.data.types import Batch
from keel.errors import retry_transient


@task(
    name="champion-version",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def champion_version(store: MlflowStore) -> str | None:
    from keel.registry import tracking

    return tracking.current_alias_version(store, "champion")


@task(
    name="load-reference",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def load_reference(data: DataStore, lineage, directory: Path) -> pd.DataFrame:
    """The champion's training data, re-materialised from the DVC remote by its md5."""
    from keel.data import partitions
    from keel.data.workspace import materialise

    root = materialise(data, lineage.dvc_file, directory, lineage.data_commit)
    data_dir = root / data.dir.relative_to(data.workspace)
    return partitions.read_partitions(partitions.list_partitions(data_dir))


@task(
    name="load-champion-model",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def load_champion_model(store: MlflowStore, drift: DriftConfig, features: FeatureConfig, champion: str):
    """The champion's pyfunc (keel.model.runtime), when drift looks at text or predictions; else None."""
    if not (features.text or drift.predictions):
        return None

    from keel.registry import tracking

    tracking.use_tracking(store)
    return tracking.load_pyfunc(store, f"models:/{store.mlflow.model_name}/{champion}").unwrap_python_model()


@task(name="compute-drift", cache_policy=NONE)
def compute_drift(
    drift: DriftConfig, features: FeatureConfig, reference: pd.DataFrame, batches: list[Batch], model=None
) -> DriftReport:
    """Feature columns as they are; text and predictions through keel.data.drift.project."""
    from keel.data.drift import compare, project

    current = pd.concat([b.frame for b in batches], ignore_index=True)
    d, f = drift, features
    ref_view, cur_view, categorical, numeric = project(
        reference, current, f.categorical, f.numeric, f.text, model, d.predictions
    )
    return compare(ref_view, cur_view, categorical, numeric, d.alpha, d.min_effect, d.share_threshold)


@task(
    name="log-drift", cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient
)
def log_drift(store: MlflowStore, report: DriftReport, champion: str, batches: list[Batch]) -> str:
    """MLflow metrics + plot in the monitoring experiment, and a Prefect table artifact."""
    from mlflow.entities import Metric
    from prefect.artifacts import create_table_artifact

    from keel.data.drift import plot
    from keel.registry import tracking

    client = tracking.client(store)
    exp_id = tracking.ensure_experiment(store, store.monitoring_suffix)
    batch = ",".join(b.name for b in batches)
    run = client.create_run(
        exp_id,
        run_name=f"drift {batch} vs v{champion}",
        tags={
            "champion": champion,
            "batch": batch,
            "drifted": str(report.drifted).lower(),
            **tracking.process_tags(store),
        },
    )
    now = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    client.log_batch(
        run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in report.metrics().items() if v == v]
    )
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(run.info.run_id, str(plot(report, Path(tmp) / "drift.png")), "drift")
    client.log_dict(run.info.run_id, {"share": report.share, "features": report.table()}, "drift/scores.json")
    client.set_terminated(run.info.run_id)
    create_table_artifact(
        key="keel-drift",
        table=report.table(),
        description=f"drift of {batch} vs champion v{champion}: share "
        f"{report.share:.2f} (threshold {report.threshold:.2f})",
    )
    return run.info.run_id
