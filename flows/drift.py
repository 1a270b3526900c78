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
    champion = champion_version(settings)
    if champion is None:  # nothing to compare with yet: say so, exit cleanly
        return None
    lineage = load_lineage(settings, champion)
    scratch = open_scratch(settings)
    try:
        reference = load_reference(settings, lineage, scratch)
    finally:
        discard_scratch(scratch)
    batches = build_batches(settings, months, files or {})
    model = load_champion_model(settings, champion)  # None unless text or predictions are compared
    report = compute_drift(settings, reference, batches, model)
    log_drift(settings, report, champion, batches)
    return report
