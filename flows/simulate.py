"""keel-simulate: replay months through the same flows (drift, then keel-retrain: ingest,
validate, train, gate, promote or hold) in a scratch workspace, and write the timeline."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.drift import drift_flow
from flows.retrain import retrain_flow
from keel.config.settings import Settings
from tasks.simulate import (
    MonthRecord,
    record_month,
    score_champion_forward,
    simulation_workspace,
    write_timeline,
)


@flow(name="keel-simulate-month", validate_parameters=False)
def simulate_month(settings: Settings, month: str) -> MonthRecord:
    s = settings
    # before the month is ingested
    forward = score_champion_forward(s.mlflow_store, s.workload, s.features.label, s.data.sample_rows, month)
    drift = drift_flow(s, [month])
    retrained = retrain_flow(s, [month], hold_for_review=False)  # the monthly schedule's flow
    return record_month(s.mlflow_store, s.workload, month, forward, drift, retrained)


@flow(name="keel-simulate", validate_parameters=False)
def simulate_flow(settings: Settings, months: list[str]) -> Path:
    scratch = simulation_workspace(settings, months)
    records = [simulate_month(scratch, month) for month in months]
    return write_timeline(scratch.reports, scratch.drift, scratch.workload, scratch.workspace, records)
