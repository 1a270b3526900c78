"""keel-ingest: build a batch, validate it alone, judge the champion on it (the guardrail),
then write, dvc add + push and record it; a breach left for a reviewer then exits 1."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from keel.config.settings import Settings
from keel.data.workspace import DataVersion
from tasks.data import build_batches, commit_batches, require_valid, validate_batches
from tasks.guard import guard_champion, require_guardrail


@flow(name="keel-ingest", validate_parameters=False)
def ingest_flow(settings: Settings, months: list[str], files: dict[str, Path] | None = None) -> DataVersion:
    batches = build_batches(settings, months, files or {})
    require_valid(validate_batches(settings, batches))  # a rejected batch writes nothing
    guarded = guard_champion(settings, batches)  # before anything else uses the batch
    version = commit_batches(settings, batches)
    require_guardrail(guarded)
    return version
