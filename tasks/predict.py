"""Batch prediction tasks."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import MlflowStore, ServeConfig
from keel.errors import retry_transient


@task(
    name="load-champion",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def load_champion(store: MlflowStore):
    from keel.errors import PromotionError
    from keel.registry import tracking
    from keel.serving.server import load_version

    version = tracking.current_alias_version(store, "champion")
    if version is None:
        raise PromotionError(f"model '{store.mlflow.model_name}' has no champion to score with")
    return load_version(store, version)


@task(name="score-file", cache_policy=NONE)
def score_file(serve: ServeConfig, loaded, source: Path, target: Path) -> dict:
    from keel.serving.batch import score_file as run

    return run(loaded, source, target, serve.chunk_rows)
