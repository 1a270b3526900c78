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
    s = settings
    batches = build_batches(s.workload, s.data_store, s.data.sample_rows, months, files or {})
    require_valid(validate_batches(s, batches))  # a rejected batch writes nothing
    # the champion judged on the labelled batch before anything else uses it
    guarded = guard_champion(s.mlflow_store, s.promotion, s.guardrail, s.features.label, batches)
    version = commit_batches(s.data_store, batches)
    require_guardrail(guarded)
    return version
