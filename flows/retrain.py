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
    batches = build_batches(settings, pending_months(settings, months, files), files or {})
    if not batches:
        return no_new_batch(settings)
    validation = validate_batches(settings, batches)
    if not validation.success:
        return reject_batches(settings, batches, validation)
    require_valid(validation)  # publishes the validation summary
    guarded = guard_champion(settings, batches) if guard else None  # the champion first
    version = commit_batches(settings, batches)
    registered = train_flow(settings)  # gated against the champion the guardrail left
    outcome = retrain_outcome(batches, version, registered, guarded)
    require_guardrail(
        guarded if hold_for_review else None
    )  # a reviewer's breach: the run fails after training
    return outcome
