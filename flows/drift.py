"""keel-drift: a new batch against the champion's training data; scores always logged."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from keel.config.settings import Settings
from keel.data.drift import DriftReport
from tasks.data import build_batches
from tasks.drift import champion_version, compute_drift, load_champion_model, load_reference, log_drift
from tasks.lineage import discard_scratch, load_lineage, open_scratch


@flow(name="keel-drift", validate_parameters=False)
def drift_flow(
    settings: Settings, months: list[str], files: dict[str, Path] | None = None
) -> DriftReport | None:
    s, store = settings, settings.mlflow_store
    champion = champion_version(store)
    if champion is None:  # nothing to compare with yet: say so, exit cleanly
        return None
    lineage = load_lineage(store, s.data_store, champion)
    scratch = open_scratch()
    try:
        reference = load_reference(s.data_store, lineage, scratch)
    finally:
        discard_scratch(scratch)
    batches = build_batches(s.workload, s.data_store, s.data.sample_rows, months, files or {})
    # None unless text or predictions are compared
    model = load_champion_model(store, s.drift, s.features, champion)
    report = compute_drift(s.drift, s.features, reference, batches, model)
    log_drift(store, report, champion, batches)
    return report
