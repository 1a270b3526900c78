"""keel-guard: a labelled batch (a month, or rows from a file) validated, then the champion
judged on it by [guardrail]; under policy auto a breach rolls back to the newest attested
champion that holds there. Nothing is ingested."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from keel.config.settings import Settings
from keel.registry.guardrail import GuardOutcome
from tasks.data import build_batches, require_valid, validate_batches
from tasks.guard import guard_champion, require_guardrail


@flow(name="keel-guard", validate_parameters=False)
def guard_flow(settings: Settings, months: list[str], files: dict[str, Path] | None = None) -> GuardOutcome:
    s = settings
    batches = build_batches(s.workload, s.data_store, s.data.sample_rows, months, files or {})
    require_valid(validate_batches(s, batches))
    guarded = guard_champion(s.mlflow_store, s.promotion, s.guardrail, s.features.label, batches)
    require_guardrail(guarded)
    return guarded
