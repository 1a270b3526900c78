"""Retraining tasks: which batch is next, a rejected batch on record, the outcome."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from keel.config.settings import DataStore, ReportsConfig, Settings, WorkloadConfig
from keel.data.types import Batch
from keel.data.validation import ValidationReport
from keel.data.workspace import DataVersion
from keel.registry.guardrail import GuardOutcome
from keel.registry.version import RegisteredVersion


@dataclass(frozen=True)
class RetrainOutcome:
    """What one retraining did. ``status``: promoted | held | rejected | no-batch."""

    status: str
    batches: list[str] = field(default_factory=list)
    data_version: str | None = None
    model_version: str | None = None
    decision: str = ""
    detail: str = ""
    run_id: str | None = None  # the training's MLflow run
    guardrail: str = ""  # the champion on the batch first: held | rolled-back | review | unjudged | ...
    guardrail_detail: str = ""


@task(name="load-settings", cache_policy=NONE)
def load_workspace_settings(workspace: str, profile: str | None) -> Settings:
    """A deployment's parameters are plain JSON: the workspace and the profile. Every
    backend the settings name must answer before any work starts."""
    from keel.config.settings import load_settings
    from keel.ops.backends import check

    settings = load_settings(workspace, profile=profile)
    check(settings)
    return settings


@task(name="pending-months", cache_policy=NONE)
def pending_months(
    workload: WorkloadConfig, data: DataStore, months: list[str] | None, files: dict[str, Path] | None
) -> list[str]:
    """The batches to take in: the ones asked for; none when only files are given; else
    the workload's next batch (the one after the newest partition it knows)."""
    from keel.data import partitions
    from keel.workloads import build

    if months is not None:
        return list(months)
    if files:
        return []
    source = build(workload.name, workload.target, workload.params)
    nxt = source.next_batch([p.stem for p in partitions.list_partitions(data.dir)])
    return [nxt] if nxt else []


@task(name="reject-batches", cache_policy=NONE)
def reject_batches(reports: ReportsConfig, batches: list[Batch], report: ValidationReport) -> RetrainOutcome:
    """A batch that broke the suite: put it on record (reports/ingest/rejections.jsonl and
    the Prefect artifact keel-rejected). Nothing is written to data/, nothing is trained,
    and the flow run still completes, so a schedule carries on."""
    import pandas as pd
    from prefect.artifacts import create_markdown_artifact

    message = report.error_message()
    entry = {
        "time": pd.Timestamp.now(tz="UTC").isoformat(),
        "batches": [b.name for b in batches],
        "sources": [b.source for b in batches],
        "failures": [asdict(f) for f in report.failures],
        "reports": [str(p) for p in report.paths],
    }
    path = reports.dir / "ingest" / "rejections.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
    create_markdown_artifact(
        key="keel-rejected",
        description=f"rejected batch: {', '.join(entry['batches'])}",
        markdown="# Batch rejected: not ingested, no training\n\n" + report.summary_markdown(),
    )
    get_run_logger().warning("batch rejected, nothing ingested or trained: %s", message)
    return RetrainOutcome("rejected", entry["batches"], detail=message)


@task(name="no-new-batch", cache_policy=NONE)
def no_new_batch() -> RetrainOutcome:
    get_run_logger().info("no new batch to take in (data/ already holds the source's last month)")
    return RetrainOutcome("no-batch", detail="no new batch")


@task(name="retrain-outcome", cache_policy=NONE)
def retrain_outcome(
    batches: list[Batch], version: DataVersion, registered: RegisteredVersion, guarded: GuardOutcome | None
) -> RetrainOutcome:
    status = "promoted" if "champion" in registered.aliases else "held"
    return RetrainOutcome(
        status,
        [b.name for b in batches],
        version.md5,
        registered.version,
        registered.decision,
        run_id=registered.run_id,
        guardrail=guarded.status if guarded else "",
        guardrail_detail=guarded.detail if guarded else "",
    )
