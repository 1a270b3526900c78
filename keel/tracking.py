"""The MLflow edge: clients and experiments from settings, never from globals set at import."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from keel.settings import Settings


def client(settings: Settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow.tracking_uri, registry_uri=settings.mlflow.registry_uri)


def use_tracking(settings: Settings) -> None:
    """Point MLflow's fluent API (needed by log_model) at the workspace's store."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_registry_uri(settings.mlflow.registry_uri)


def ensure_experiment(settings: Settings) -> str:
    c = client(settings)
    exp = c.get_experiment_by_name(settings.mlflow.experiment)
    if exp is not None:
        return exp.experiment_id
    root = settings.mlflow.artifact_root
    location = f"{root.rstrip('/')}/{settings.mlflow.experiment}" if root else None
    return c.create_experiment(settings.mlflow.experiment, artifact_location=location)


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested config -> flat, stable MLflow param names (``train.lr``)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key in sorted(value):
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), value[key]))
        return out
    if isinstance(value, (list, tuple)):
        return {prefix: json.dumps(list(value))}
    return {prefix: str(value)}


def current_alias_version(settings: Settings, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client(settings).get_model_version_by_alias(settings.mlflow.model_name, alias)
        return str(mv.version)
    except MlflowException as exc:
        # "no such model" / "no such alias" mean none yet; anything else (server down) is raised
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
