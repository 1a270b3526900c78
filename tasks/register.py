"""Registration: log the pyfunc model with signature and example, create the
registry version with its tags, set the aliases."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import Settings
from keel.data.types import DatasetRef, Splits
from keel.data.validation import ValidationReport
from keel.model.evaluation import Evaluation
from keel.registry.version import RegisteredVersion

TAGGED_METRICS = (
    "test/roc_auc",
    "test/f1",
    "test/accuracy",
    "test/precision",
    "test/recall",
    "test/log_loss",
    "test/entity_f1",
)


def version_tags(
    settings: Settings,
    dataset: DatasetRef,
    validation: ValidationReport,
    evaluation: Evaluation,
    git_sha: str,
    env_hash: str,
    weights: str,
    data_commit: str = "",
) -> dict[str, str]:
    from keel.registry.lineage import numerics

    tags = {
        "data_version": dataset.version.md5,
        "git_sha": git_sha,
        "data_commit": data_commit,
        "config_hash": settings.config_hash(),
        "validation_status": validation.status,
        "env_hash": env_hash,
        "weights_sha256": weights,
        "numerics": numerics(),  # the kind of CPU: replay is bit-identical on the same kind
        "seed": str(settings.train.seed),
        "data_in_remote": "verified",
    }
    tags.update({k: f"{evaluation.metrics[k]:.6g}" for k in TAGGED_METRICS if k in evaluation.metrics})
    if settings.tune.from_study:  # keel tune's best config: the study and trial it came from
        tags.update({"tune.study": settings.tune.from_study, "tune.trial": str(settings.tune.from_trial)})
    return tags


def model_tags(family) -> dict[str, str]:
    """The network family a version was built with; for a team's own, its target and the
    identity of its code (keel.registry.packaging.code_identity), which replay compares."""
    from keel.registry import packaging

    identity = {"family": family.name, **packaging.code_identity(family)}
    return {f"model.{key}": value for key, value in identity.items()}


@task(name="register-model", cache_policy=NONE)  # not retried: a retry could add a second version
def register_model(
    settings: Settings,
    model,
    splits: Splits,
    run_id: str,
    dataset: DatasetRef,
    validation: ValidationReport,
    evaluation: Evaluation,
) -> RegisteredVersion:
    from mlflow.exceptions import MlflowException

    from keel.data.workspace import data_commit, git_commit
    from keel.model.runtime.adapters import adapter_of, saved_state
    from keel.model.runtime.pyfunc import save_artifacts
    from keel.registry import packaging, tracking
    from keel.registry.lineage import environment_lock, weights_sha256

    example = splits.test[model.preprocessor.columns].head(5).reset_index(drop=True)
    adapter = adapter_of(model.net)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = save_artifacts(
            model.family, model.preprocessor, model.net, model.threshold, Path(tmp), model.objective
        )
        info = packaging.log_pyfunc(
            settings.mlflow_store,
            run_id,
            "pyfunc_entry.py",
            artifacts,
            example,
            model.predict(example),
            # a text model: its tokenizer's too; an adapter: peft, which merges it at load, and its base
            (*getattr(model.preprocessor, "REQUIREMENTS", ()), *(adapter.requirements if adapter else ())),
            family=model.family,
        )

    client = tracking.client(settings.mlflow_store)
    name = settings.mlflow.model_name
    try:
        description = f"keel model: workload {settings.workload.name!r}, {model.objective.kind} objective"
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = version_tags(
        settings,
        dataset,
        validation,
        evaluation,
        git_commit(settings.workspace),
        environment_lock()[0],
        weights_sha256(saved_state(model.net)),
        data_commit(settings.data_store, dataset.version.md5) or "",
    )
    tags.update(model_tags(model.family))
    if adapter is not None:  # what it adapts, where the base comes from (lineage shows it)
        tags.update({"adapter": adapter.method, "adapter.base": adapter.base.describe()})
        tags["adapter.base_sha256"] = adapter.base.sha256
    if client.get_run(run_id).data.tags.get("refit") == "true":  # tasks.train.refit_model
        tags["refit"] = "true"  # the weights are the refit on every batch, not the gated fit
    mv = client.create_model_version(
        name, source=info.model_uri, run_id=run_id, model_id=info.model_id, tags=tags
    )
    client.set_registered_model_alias(name, "challenger", mv.version)
    return RegisteredVersion(name, str(mv.version), run_id, info.model_uri, ["challenger"])
