"""keel-tune: data version -> validate -> open (or resume) the Optuna study -> its trials as
Prefect task runs, fanned out by the task runner ``[tune] runner`` names -> the study's
parent MLflow run (best trial, plots) -> the best config trained by keel-train (gate,
registration, policy), its lineage naming the study and trial."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow

from flows.train import train_flow
from keel.config.settings import Settings
from keel.registry.version import RegisteredVersion
from tasks.data import load_splits, require_valid, resolve_dataset, validate_data
from tasks.tune import (
    TrialResult,
    best_config,
    finish_study_run,
    open_study,
    run_trial,
    start_study_run,
    trial_deadline,
)


@dataclass(frozen=True)
class TuneOutcome:
    study: str
    run_id: str  # the study's parent MLflow run
    trials: list[TrialResult]  # this session's
    summary: dict[str, Any]  # the whole study's (resumed sessions included)
    registered: RegisteredVersion | None  # the best config, trained through the gate (None: train_best off)


@flow(name="keel-tune", validate_parameters=False)
def tune_flow(settings: Settings, resume: bool = False, train_best: bool = True) -> TuneOutcome:
    """``keel tune`` runs it with the task runner ``tasks.tune.task_runner(settings)`` builds;
    ``train_best=False`` (``--no-train``): the search only, the best config left to a reviewer."""
    s, store = settings, settings.mlflow_store
    dataset = resolve_dataset(s.data_store)
    require_valid(validate_data(s, dataset))  # stops before any trial
    splits = load_splits(s.workload, s.split, dataset)  # trials see train and val only: test is the gate's
    name = open_study(s.tune, store, s.train.seed, resume)
    parent = start_study_run(s.tune, store, name)
    deadline = trial_deadline(s.tune)
    futures = [run_trial.submit(s, name, splits, parent, deadline) for _ in range(s.tune.trials)]
    trials = [f.result() for f in futures]
    summary = finish_study_run(s.tune, store, name, parent, trials)
    registered = train_flow(s.with_overrides(best_config(s.tune, store, name))) if train_best else None
    return TuneOutcome(name, parent, trials, summary, registered)
