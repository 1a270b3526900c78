"""keel-simulate: replay months through the same flows (drift, ingest, retrain, gate,
promote or hold) in a scratch workspace, and write the timeline."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.drift import drift_flow
from flows.ingest import ingest_flow
from flows.train import train_flow
from keel.settings import Settings
from tasks.simulate import (MonthRecord, record_month, score_champion_forward, simulation_workspace,
                            write_timeline)


@flow(name="keel-simulate-month", validate_parameters=False)
def simulate_month(settings: Settings, month: str) -> MonthRecord:
    forward = score_champion_forward(settings, month)   # before the month is ingested
    drift = drift_flow(settings, [month])
    ingest_flow(settings, [month])
    trained = train_flow(settings)
    return record_month(settings, month, forward, drift, trained)


@flow(name="keel-simulate", validate_parameters=False)
def simulate_flow(settings: Settings, months: list[str]) -> Path:
    scratch = simulation_workspace(settings, months)
    records = [simulate_month(scratch, month) for month in months]
    return write_timeline(scratch, records)
