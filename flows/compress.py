"""keel-compress: version N -> its held-out rows (from the DVC remote) -> a compressed
variant -> parity against N on those rows (metrics, agreement, size, latency) -> the
parity gate -> register as a new version derived from N -> promote or hold (policy)."""

from __future__ import annotations

from prefect import flow

from keel.config.settings import Settings
from keel.registry.version import RegisteredVersion
from tasks.compress import (
    build_variant,
    load_source_model,
    measure_parity,
    parity_gate,
    register_variant,
    source_baseline,
)
from tasks.data import load_splits
from tasks.evaluate import evaluate_model, log_evaluation
from tasks.gate import apply_policy, record_gate
from tasks.lineage import discard_scratch, load_lineage, materialise_dataset, open_scratch


@flow(name="keel-compress", validate_parameters=False)
def compress_flow(settings: Settings, version: str, method: str) -> RegisteredVersion:
    s, store = settings, settings.mlflow_store
    lineage = load_lineage(store, s.data_store, version)
    scratch = open_scratch()
    try:
        source, source_artifacts = load_source_model(store, lineage, scratch)
        recorded, dataset = materialise_dataset(store, s.data_store, lineage, scratch)
        splits = load_splits(recorded.workload, recorded.split, dataset)  # N's own val/test rows
        c = s.compress
        variant = build_variant(
            source, splits, method, scratch, c.sparsity, c.recovery_epochs, recorded.train, c.recovery
        )
        source_eval = evaluate_model(recorded.features, source, splits)
        evaluation = evaluate_model(recorded.features, variant, splits)
        parity = measure_parity(
            s.compress, lineage, source, source_artifacts, variant, source_eval, evaluation, splits, scratch
        )
        gate = parity_gate(s.compress, s.gate, lineage, evaluation, source_eval, parity)
        registered = register_variant(store, s.profile, lineage, variant, splits, evaluation, parity)
        log_evaluation(store, evaluation, registered.run_id)
        baseline = source_baseline(store, lineage, source_eval)
        record_gate(store, s.gate.slice_metric, registered, dataset, evaluation, baseline, gate)
        decided = apply_policy(store, s.promotion, registered, gate)
    finally:
        discard_scratch(scratch)
    return decided
