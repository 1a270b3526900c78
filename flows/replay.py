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
    store = settings.mlflow_store
    lineage = load_lineage(store, settings.data_store, version)
    scratch = open_scratch()
    try:
        r, dataset = materialise_dataset(store, settings.data_store, lineage, scratch)  # r: as recorded
        splits = load_splits(r.workload, r.split, dataset)
        gated = train_model(r.workload, r.model, r.features, r.train, store, splits, None)
        built = refit_model(
            r.workload, r.model, r.features, r.train, store, gated, splits, lineage.refit, None
        )
        model = recompress(lineage, built, splits, scratch, r.train)
        evaluation = evaluate_model(r.features, recorded_model(lineage, gated, model), splits)
        report = compare_replay(lineage, model, evaluation)
    finally:
        discard_scratch(scratch)
    write_replay_report(settings.reports, report)
    return report
