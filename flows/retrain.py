"""keel-retrain: take in the next batch (or the one given), validate it, judge the champion
on it (the guardrail: a breach rolls back under policy auto), and when it holds up ingest it
and run keel-train (gate, then promote or hold by policy). A rejected batch is
put on record and trains nothing; the run still completes, so a schedule carries on."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.train import train_flow
from keel.config.settings import Settings
from tasks.data import build_batches, commit_batches, require_valid, validate_batches
from tasks.guard import guard_champion, require_guardrail
from tasks.retrain import RetrainOutcome, no_new_batch, pending_months, reject_batches, retrain_outcome


@flow(name="keel-retrain", validate_parameters=False)
def retrain_flow(
    settings: Settings,
    months: list[str] | None = None,
    files: dict[str, Path] | None = None,
    guard: bool = True,  # False: the caller (keel-monitor) judged the champion on these batches
    hold_for_review: bool = True,  # False: a breach for a reviewer is recorded, not raised (simulate)
) -> RetrainOutcome:
    s = settings
    pending = pending_months(s.workload, s.data_store, months, files)
    batches = build_batches(s.workload, s.data_store, s.data.sample_rows, pending, files or {})
    if not batches:
        return no_new_batch()
    validation = validate_batches(s, batches)
    if not validation.success:
        return reject_batches(s.reports, batches, validation)
    require_valid(validation)  # publishes the validation summary
    guarded = (  # the champion first
        guard_champion(s.mlflow_store, s.promotion, s.guardrail, s.features.label, batches) if guard else None
    )
    version = commit_batches(s.data_store, batches)
    registered = train_flow(s)  # gated against the champion the guardrail left
    outcome = retrain_outcome(batches, version, registered, guarded)
    require_guardrail(guarded if hold_for_review else None)  # a reviewer's breach: the run fails now
    return outcome
