"""keel-monitor: validate the incoming batch, judge the champion on it (the guardrail),
measure its drift against the champion's training data (scores always logged), and when it
drifted start one retraining on it."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, tags

from flows.drift import drift_flow
from flows.retrain import retrain_flow
from keel.config.settings import Settings
from tasks.data import build_batches, validate_batches
from tasks.guard import guard_champion, require_guardrail
from tasks.monitor import MonitorOutcome, monitor_outcome
from tasks.retrain import pending_months, reject_batches
from tasks.trigger import decide_trigger, start_retraining


@flow(name="keel-monitor", validate_parameters=False)
def monitor_flow(
    settings: Settings, months: list[str] | None = None, files: dict[str, Path] | None = None
) -> MonitorOutcome:
    s = settings
    months = pending_months(s.workload, s.data_store, months, files)
    batches = build_batches(s.workload, s.data_store, s.data.sample_rows, months, files or {})
    if not batches:
        return monitor_outcome("no-batch")
    validation = validate_batches(s, batches)
    if not validation.success:  # on record; no drift alarm, no training
        return monitor_outcome("rejected", rejected=reject_batches(s.reports, batches, validation))
    # labelled: the champion judged first
    guarded = guard_champion(s.mlflow_store, s.promotion, s.guardrail, s.features.label, batches)
    report = drift_flow(s, months, files)  # rebuilds the batch: no frames as flow parameters
    if report is None:
        return monitor_outcome("no-champion", guardrail=guarded)
    trigger = decide_trigger(s.mlflow_store, s.drift, report, batches)
    retrained = None
    if trigger.action == "deployment":
        trigger = start_retraining(s.workspace, s.profile, trigger, months, files)
    elif trigger.action == "inline":
        with tags(*trigger.tags):
            retrained = retrain_flow(s, months, files, guard=False)
    outcome = monitor_outcome(
        "drift" if report.drifted else "no-drift", report, trigger, retrained, None, guarded
    )
    require_guardrail(guarded)
    return outcome
