"""keel-train: data version -> validate -> train (on the older batches) -> evaluate -> explain
(explain/: what the model relies on, keel.model.explain) -> gate
against the champion (on the newest batch) -> refit on every batch when blessed -> verify
the remote -> register -> promote or hold (policy) -> with [compress] auto, a compressed
variant of a blessed version (flows/compress.py)."""

from __future__ import annotations

from dataclasses import replace

from prefect import flow

from flows.compress import compress_flow
from keel.config.settings import Settings
from keel.registry.version import RegisteredVersion
from tasks.data import load_splits, require_valid, resolve_dataset, validate_data, verify_remote
from tasks.evaluate import evaluate_model, log_evaluation
from tasks.explain import explain_model, log_explanation
from tasks.gate import apply_gate, apply_policy, evaluate_champion, record_gate
from tasks.register import register_model
from tasks.report import publish_summary
from tasks.train import check_model, end_run, refit_model, start_run, train_model


@flow(name="keel-train", validate_parameters=False)
def train_flow(settings: Settings) -> RegisteredVersion:
    s, store, data = settings, settings.mlflow_store, settings.data_store
    dataset = resolve_dataset(data)
    validation = require_valid(validate_data(s, dataset))  # stops before any run
    splits = load_splits(s.workload, s.split, dataset)
    check_model(s.workload, s.model, s.features, splits)  # a team's own family: tried first
    run_id = start_run(s, dataset, validation, splits)
    try:
        model = train_model(s.workload, s.model, s.features, s.train, store, splits, run_id)
        evaluation = evaluate_model(s.features, model, splits)
        log_evaluation(store, evaluation, run_id)
        explanation = explain_model(s.explain, s.features.label, s.train.seed, model, splits)
        log_explanation(store, explanation, run_id)
        baseline = evaluate_champion(store, s.features, splits)  # same held-out rows
        gate = apply_gate(
            s.gate, s.sources.get("gate.metrics", ""), store, evaluation, baseline, splits.holdout
        )
        # newest-batch holdout: a blessed model is fit again on every batch
        model = refit_model(
            s.workload, s.model, s.features, s.train, store, model, splits, gate.passed, run_id
        )
        verified = verify_remote(data, dataset)  # the data version is in the DVC remote
        registered = register_model(s, model, splits, run_id, verified, validation, evaluation)
        record_gate(store, s.gate.slice_metric, registered, dataset, evaluation, baseline, gate, explanation)
        decided = apply_policy(store, s.promotion, registered, gate)
    except BaseException:
        end_run(store, run_id, "FAILED")
        raise
    end_run(store, run_id, "FINISHED")
    publish_summary(store, dataset, validation, evaluation, decided)
    if s.compress.auto and gate.passed:  # [compress] auto: a variant of every blessed version
        variant = compress_flow(s, decided.version, s.compress.method)
        decided = replace(decided, variant=variant.version, variant_decision=variant.decision)
    return decided
