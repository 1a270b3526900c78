"""The run summary as a Prefect markdown artifact (shown in the Prefect UI)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import MlflowStore
from keel.data.types import DatasetRef
from keel.data.validation import ValidationReport
from keel.model.evaluation import Evaluation
from keel.registry.version import RegisteredVersion

SUMMARY_METRICS = (
    "test/roc_auc",
    "test/f1",
    "test/accuracy",
    "test/precision",
    "test/recall",
    "test/log_loss",
    "val/roc_auc",
)


def summary_markdown(
    store: MlflowStore,
    dataset: DatasetRef,
    validation: ValidationReport,
    evaluation: Evaluation,
    registered: RegisteredVersion,
) -> str:
    lines = [
        f"# keel training run: {registered.name} v{registered.version}",
        "",
        f"- **data version**: `{dataset.version.md5}` ({', '.join(dataset.partition_names)}; "
        f"{dataset.rows} rows)",
        f"- **validation**: {validation.status} ({validation.evaluated} expectations)",
        f"- **registered**: `{registered.registry_uri}` aliases: {', '.join(registered.aliases)}",
        f"- **promotion**: {registered.decision}",
        f"- **MLflow run**: `{registered.run_id}` in experiment `{store.mlflow.experiment}`",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {evaluation.metrics[k]:.4f} |" for k in SUMMARY_METRICS if k in evaluation.metrics]
    return "\n".join(lines) + "\n"


@task(name="publish-summary", cache_policy=NONE)
def publish_summary(
    store: MlflowStore,
    dataset: DatasetRef,
    validation: ValidationReport,
    evaluation: Evaluation,
    registered: RegisteredVersion,
) -> str:
    from prefect.artifacts import create_markdown_artifact

    markdown = summary_markdown(store, dataset, validation, evaluation, registered)
    create_markdown_artifact(
        key="keel-train-summary", markdown=markdown, description=f"{registered.name} v{registered.version}"
    )
    return markdown
