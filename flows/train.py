"""keel-train: data version -> validate -> train (on the older batches) -> evaluate -> explain
(explain/: what the model relies on, keel.explain) -> gate
against the champion (on the newest batch) -> refit on every batch when blessed -> verify
the remote -> register -> promote or hold (policy) -> with [compress] auto, a compressed
variant of a blessed version (flows/compress.py)."""

from __future__ import annotations

from dataclasses import replace

from prefect import flow

from flows.compress import compress_flow
from keel.config.settings import Settings
from tasks.data import load_splits, require_valid, resolve_dataset, validate_data, verify_remote
from tasks.evaluate import evaluate_model, log_evaluation
from tasks.explain import explain_model, log_explanation
from tasks.gate import apply_gate, apply_policy, evaluate_champion, record_gate
from tasks.register import RegisteredVersion, register_model
from tasks.report import publish_summary
from tasks.train import end_run, refit_model, start_run, train_model


@flow(name="keel-train", validate_parameters=False)
def train_flow(settings: Settings) -> RegisteredVersion:
    dataset = resolve_dataset(settings)
    validation = require_valid(validate_data(settings, dataset))  # stops before any run
    splits = load_splits(settings, dataset)
    run_id = start_run(settings, dataset, validation, splits)
    try:
        model = train_model(settings, splits, run_id)
        evaluation = evaluate_model(settings, model, splits)
        log_evaluation(settings, evaluation, run_id)
        explanation = explain_model(settings, model, splits)
        log_explanation(settings, explanation, run_id)
        baseline = evaluate_champion(settings, splits)  # same held-out rows
        gate = apply_gate(settings, evaluation, baseline, splits.holdout)
        model = refit_model(settings, model, splits, gate.passed, run_id)  # newest holdout: on every batch
        verified = verify_remote(settings, dataset)  # the data version is in the DVC remote
        registered = register_model(settings, model, splits, run_id, verified, validation, evaluation)
        record_gate(settings, registered, dataset, evaluation, baseline, gate, explanation)
        decided = apply_policy(settings, registered, gate)
    except BaseException:
        end_run(settings, run_id, "FAILED")
        raise
    end_run(settings, run_id, "FINISHED")
    publish_summary(settings, dataset, validation, evaluation, decided)
    if settings.compress.auto and gate.passed:  # [compress] auto: a variant of every blessed version
        variant = compress_flow(settings, decided.version, settings.compress.method)
        decided = replace(decided, variant=variant.version, variant_decision=variant.decision)
    return decided
