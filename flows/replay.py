"""keel-replay: rebuild a model version from its recorded data, config and seed (the gated
fit, then the refit when the version was refit; a compressed variant: its source's, then
compressed again), and report how the rebuild compares."""

from __future__ import annotations

from prefect import flow

from keel.config.settings import Settings
from keel.registry.lineage import ReplayReport
from tasks.data import load_splits
from tasks.evaluate import evaluate_model
from tasks.lineage import (
    compare_replay,
    discard_scratch,
    load_lineage,
    materialise_dataset,
    open_scratch,
    recompress,
    recorded_model,
    write_replay_report,
)
from tasks.train import refit_model, train_model


@flow(name="keel-replay", validate_parameters=False)
def replay_flow(settings: Settings, version: str) -> ReplayReport:
    lineage = load_lineage(settings, version)
    scratch = open_scratch(settings)
    try:
        recorded, dataset = materialise_dataset(settings, lineage, scratch)
        splits = load_splits(recorded, dataset)
        gated = train_model(recorded, splits, None)
        model = recompress(
            lineage, refit_model(recorded, gated, splits, lineage.refit, None), splits, scratch
        )
        evaluation = evaluate_model(recorded, recorded_model(lineage, gated, model), splits)
        report = compare_replay(lineage, model, evaluation)
    finally:
        discard_scratch(scratch)
    write_replay_report(settings, report)
    return report
