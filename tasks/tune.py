"""Tuning tasks: an Optuna study in RDB storage (keel tune), one trial per Prefect task run.

A trial asks the study for a config from the workload's ``[tune] space``, trains it on
the train split with Optuna's median pruner watching ``val/loss`` each epoch (through
Lightning), and tells the study its best ``val/loss``: the test rows stay for the gate.
Each trial is a child MLflow run of the study's parent run, with its params and curves.
Importing this module touches no disk, server or study.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import MlflowStore, SearchParam, Settings, TuneConfig
from keel.data.types import Splits
from keel.errors import InputError

OBJECTIVE = "val/loss"  # what the study minimises: early stopping's own criterion


@dataclass(frozen=True)
class TrialResult:
    number: int
    state: str  # "complete", "pruned", "failed"
    value: float | None
    params: dict[str, Any]
    run_id: str
    seconds: float


def storage_url(tune: TuneConfig, store: MlflowStore) -> str:
    """``[tune] storage``, or sqlite beside the embedded MLflow store (Optuna keeps its
    own tables, so not inside mlflow.db: both would own an ``alembic_version`` table)."""
    if tune.storage:
        return tune.storage
    uri = store.mlflow.tracking_uri
    if uri.startswith("sqlite:///"):
        from pathlib import Path

        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).parent / 'optuna.db'}"
    raise InputError(
        f"tune.storage is empty and MLflow is at {uri}: name the study's database "
        "(e.g. postgresql://keel@db/optuna, KEEL_TUNE__STORAGE)"
    )


def study_name(tune: TuneConfig, store: MlflowStore) -> str:
    return tune.study or f"{store.mlflow.model_name}-tune"


def _sampler(seed: int, number: int = 0):
    import optuna

    return optuna.samplers.TPESampler(seed=seed + number)


def _pruner(tune: TuneConfig):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=tune.warmup_epochs)


def finished_trials(tune: TuneConfig, store: MlflowStore) -> int:
    """Trials of the study that have ended (complete, pruned or failed); 0 before it exists.
    Read by the console to show progress; not a task (it is polled outside the flow)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name(tune, store), storage=storage_url(tune, store))
    except KeyError:  # no such study yet
        return 0
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=ended))


@task(name="open-study", cache_policy=NONE)
def open_study(tune: TuneConfig, store: MlflowStore, seed: int, resume: bool) -> str:
    """Create the study (minimise val/loss; its sampler seeded by ``seed``), or with ``resume``
    load the one that exists; a new study over an existing name is refused, nothing overwritten."""
    import optuna

    if not tune.space:
        raise InputError(
            f"model {store.mlflow.model_name!r}: its workload declares no [tune] space: add e.g. "
            '[tune.space."train.lr"] low = 1e-4, high = 1e-1, log = true'
        )
    name, url = study_name(tune, store), storage_url(tune, store)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    exists = name in {s.study_name for s in optuna.get_all_study_summaries(url)}
    if exists and not resume:
        raise InputError(f"study {name!r} exists in {url}: --resume continues it, --study names a new one")
    if resume and not exists:
        raise InputError(f"--resume: no study {name!r} in {url}")
    optuna.create_study(
        study_name=name,
        storage=url,
        direction="minimize",
        sampler=_sampler(seed),
        pruner=_pruner(tune),
        load_if_exists=resume,
    )
    return name


def _labels(p: SearchParam) -> list[str]:
    """Optuna stores choices as JSON scalars: lists (train.hidden) go by their repr."""
    return [repr(c) for c in p.choices or []]


def _choice(p: SearchParam, label: str) -> Any:
    return (p.choices or [])[_labels(p).index(label)]


def sample(trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """The trial's config: one value per dimension of the space, keyed by setting."""
    params: dict[str, Any] = {}
    for key, p in sorted(space.items()):
        if p.choices is not None:
            params[key] = _choice(p, trial.suggest_categorical(key, _labels(p)))
        elif p.integer:
            step = int(p.step or 1)
            params[key] = trial.suggest_int(key, int(p.low or 0), int(p.high or 0), step=step, log=p.log)
        else:
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return params


def task_runner(tune: TuneConfig):
    """The Prefect task runner the trials fan out on: ``process`` (default: a pool of
    ``concurrency`` processes on this machine), ``thread``, or ``dask`` (prefect-dask: the
    scheduler at ``dask_address``, or a local cluster of ``concurrency`` worker processes)."""
    cfg = tune
    if cfg.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.dask_address:
            return DaskTaskRunner(address=cfg.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": cfg.concurrency, "threads_per_worker": 1, "processes": True}
        )
    if cfg.runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.concurrency)
    from prefect.task_runners import ProcessPoolTaskRunner

    return ProcessPoolTaskRunner(max_workers=cfg.concurrency)


@task(name="trial-deadline", cache_policy=NONE)
def trial_deadline(tune: TuneConfig) -> float:
    """When no new trial may start (``tune.timeout_s`` from now; 0: never)."""
    import time

    return time.time() + tune.timeout_s if tune.timeout_s else 0.0


@task(name="run-trial", cache_policy=NONE)
def run_trial(
    settings: Settings, name: str, splits: Splits, parent_run_id: str, deadline: float
) -> TrialResult:
    """Ask the study for a config, train it (pruned by the median rule on val/loss) and
    tell the study the outcome; one child MLflow run holds its params and curves. Past
    ``deadline`` (--timeout) the trial does not start."""
    import time

    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    from keel.registry import tracking
    from tasks.train import _fit

    if deadline and time.time() > deadline:
        return TrialResult(-1, "skipped", None, {}, "", 0.0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    tune, store = settings.tune, settings.mlflow_store
    study = optuna.load_study(study_name=name, storage=storage_url(tune, store), pruner=_pruner(tune))
    trial = study.ask()  # its number is the storage's, unique across workers
    # seeded per trial (seed + number): in one process, one sampler would replay one draw
    # per trial; one after another, the same study draws the same configs on every run
    study.sampler = _sampler(settings.train.seed, trial.number)
    params = sample(trial, tune.space)
    s = settings.with_overrides(params)
    client = tracking.client(store)
    run = client.create_run(
        tracking.ensure_experiment(store),
        run_name=f"{name} trial {trial.number}",
        tags={"mlflow.parentRunId": parent_run_id, "tune.study": name, "tune.trial": str(trial.number)},
    )
    run_id = run.info.run_id
    client.log_batch(run_id, params=[_param(k, v) for k, v in sorted(params.items())])
    pruning = PyTorchLightningPruningCallback(trial, monitor=OBJECTIVE)
    try:
        model = _fit(
            s.workload,
            s.model,
            s.features,
            s.train,
            store,
            splits.train,
            splits.val,
            run_id,
            callbacks=[pruning],
        )
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        client.set_tag(run_id, "tune.state", "pruned")
        client.set_terminated(run_id, "KILLED")
        return TrialResult(trial.number, "pruned", None, params, run_id, time.perf_counter() - start)
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        client.set_terminated(run_id, "FAILED")
        raise
    value = float(model.best_val_loss) if model.best_val_loss is not None else float("nan")
    study.tell(trial, value)
    client.log_metric(run_id, "tune/objective", value)
    client.set_tag(run_id, "tune.state", "complete")
    client.set_terminated(run_id, "FINISHED")
    return TrialResult(trial.number, "complete", value, params, run_id, time.perf_counter() - start)


def _param(key: str, value: Any):
    from mlflow.entities import Param

    return Param(key, str(value))


@task(name="start-study-run", cache_policy=NONE)
def start_study_run(tune: TuneConfig, store: MlflowStore, name: str) -> str:
    """The study's parent MLflow run (a resumed study gets a new one: one per session)."""
    from keel.registry import tracking

    client = tracking.client(store)
    run = client.create_run(
        tracking.ensure_experiment(store),
        run_name=f"{name} (study)",
        tags={"tune.study": name, "tune.storage": storage_url(tune, store), "tune.objective": OBJECTIVE},
    )
    space = {k: v.model_dump(exclude_defaults=True) for k, v in tune.space.items()}
    client.log_dict(run.info.run_id, space, "tune/space.json")
    return run.info.run_id


@task(name="finish-study-run", cache_policy=NONE)
def finish_study_run(
    tune: TuneConfig, store: MlflowStore, name: str, run_id: str, results: list[TrialResult]
) -> dict[str, Any]:
    """The study so far (every session's trials) into the parent run: the best trial, the
    counts, optimisation history and parameter importances as plots."""
    import tempfile
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from matplotlib.figure import Figure
    from optuna.visualization import matplotlib as ovm

    from keel.registry import tracking

    study = optuna.load_study(study_name=name, storage=storage_url(tune, store))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError(f"study {name}: no trial completed (see the child runs' states)")
    best = study.best_trial
    client = tracking.client(store)
    counts = {s.name.lower(): sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState}
    summary = {
        "study": name,
        "objective": OBJECTIVE,
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": dict(best.params),
        "trials": {k: v for k, v in counts.items() if v},
        "this_session": [r.number for r in results if r.state != "skipped"],
    }
    client.log_dict(run_id, summary, "tune/study.json")
    client.log_metric(run_id, "tune/best_objective", float(best.value or "nan"))
    client.log_metric(run_id, "tune/trials_complete", len(done))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # Optuna marks its matplotlib plots experimental: a notice for every study, nothing to act on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = {"optimization_history.png": ovm.plot_optimization_history(study)}
        if len(done) > 1 and len(tune.space) > 1:
            axes["param_importances.png"] = ovm.plot_param_importances(study)
        for file, ax in axes.items():
            fig = ax.get_figure(root=True)
            assert isinstance(fig, Figure)
            fig.set_size_inches(7, 4)
            fig.tight_layout()
            fig.savefig(Path(tmp) / file, dpi=100)
            plt.close(fig)
            client.log_artifact(run_id, str(Path(tmp) / file), "tune")
    client.set_terminated(run_id, "FINISHED")
    return summary


@task(name="best-config", cache_policy=NONE)
def best_config(tune: TuneConfig, store: MlflowStore, name: str) -> dict[str, Any]:
    """The best trial's config as settings overrides, plus where it came from (lineage)."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage_url(tune, store))
    best = study.best_trial
    params: dict[str, Any] = {}
    for key, p in tune.space.items():
        params[key] = best.params[key] if p.choices is None else _choice(p, best.params[key])
    return {**params, "tune.from_study": name, "tune.from_trial": best.number}
