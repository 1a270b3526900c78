"""keel-compress: version N -> its held-out rows (from the DVC remote) -> a compressed
variant -> parity against N on those rows (metrics, agreement, size, latency) -> the
parity gate -> register as a new version derived from N -> promote or hold (policy)."""

from __future__ import annotations

from prefect import flow

from keel.config.settings import Settings
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
from tasks.register import RegisteredVersion


@flow(name="keel-compress", validate_parameters=False)
def compress_flow(settings: Settings, version: str, method: str) -> RegisteredVersion:
    lineage = load_lineage(settings, version)
    scratch = open_scratch(settings)
    try:
        source, source_artifacts = load_source_model(settings, lineage, scratch)
        recorded, dataset = materialise_dataset(settings, lineage, scratch)
        splits = load_splits(recorded, dataset)  # N's own val/test rows
        variant = build_variant(settings, source, splits, method, scratch)
        source_eval = evaluate_model(recorded, source, splits)
        evaluation = evaluate_model(recorded, variant, splits)
        parity = measure_parity(
            settings, lineage, source, source_artifacts, variant, source_eval, evaluation, splits, scratch
        )
        gate = parity_gate(settings, lineage, evaluation, source_eval, parity)
        registered = register_variant(settings, lineage, variant, splits, evaluation, parity)
        log_evaluation(settings, evaluation, registered.run_id)
        baseline = source_baseline(settings, lineage, source_eval)
        record_gate(settings, registered, dataset, evaluation, baseline, gate)
        decided = apply_policy(settings, registered, gate)
    finally:
        discard_scratch(scratch)
    return decided
