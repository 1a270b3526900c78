"""Training tasks: the MLflow run's edges and the Lightning fit. A fit reads ``[workload]``
(its objective and network), ``[features]`` and ``[train]``, and logs into the MLflow store;
``start_run`` takes the whole settings: it records the resolved config in the run."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import (
    FeatureConfig,
    MlflowStore,
    ModelConfig,
    Settings,
    TrainConfig,
    WorkloadConfig,
)
from keel.data.types import DatasetRef, Splits
from keel.data.validation import ValidationReport
from keel.errors import retry_transient


def run_name(dataset: DatasetRef) -> str:
    names = dataset.partition_names
    span = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
    return f"data-{dataset.version.short} ({span})"


@task(
    name="start-run", cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient
)
def start_run(settings: Settings, dataset: DatasetRef, validation: ValidationReport, splits: Splits) -> str:
    """Open one MLflow run per training, named after the data version; log params,
    the resolved config, the data version, the git commit and the commit that holds the
    data version's data.dvc."""
    from mlflow.entities import Param

    from keel.data.workspace import data_commit, git_commit
    from keel.registry import servability, tracking
    from keel.registry.lineage import environment_lock

    # a blessed version is loaded in a fresh process before any alias moves: the server
    # that forks that process imports MLflow now, while the model trains
    servability.warm()
    env_hash, packages = environment_lock()
    tracking.reap_once(settings.mlflow_store)  # deployment runs open the store here, not through the CLI
    client = tracking.client(settings.mlflow_store)
    experiment_id = tracking.ensure_experiment(settings.mlflow_store)
    commit = git_commit(settings.workspace)
    run = client.create_run(
        experiment_id,
        run_name=run_name(dataset),
        tags={
            "data_version": dataset.version.md5,
            "data_partitions": ",".join(dataset.partition_names),
            "git_sha": commit,
            "mlflow.source.git.commit": commit.removesuffix("+dirty"),
            # the commit whose data.dvc holds this data version ("" when it is not committed)
            "data_commit": data_commit(settings.data_store, dataset.version.md5) or "",
            "config_hash": settings.config_hash(),
            "validation_status": validation.status,
            "profile": settings.profile or "default",
            "env_hash": env_hash,
            **tracking.process_tags(settings.mlflow_store),  # host + pid: a killed run is found and marked
            **(
                {"tune.study": settings.tune.from_study, "tune.trial": str(settings.tune.from_trial)}
                if settings.tune.from_study
                else {}
            ),
        },
    )
    params = tracking.flatten("", settings.model_inputs())
    params.update(
        {
            "data.version": dataset.version.md5,
            "data.rows": str(dataset.rows),
            **{f"data.rows_{k}": str(v) for k, v in splits.sizes().items()},
        }
    )
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in sorted(params.items())])
    partitions = dataset.partition_names
    client.log_inputs(
        run.info.run_id,
        datasets=[
            tracking.dataset_input(settings.data_store, dataset.version.md5, dataset.rows, partitions, commit)
        ],
    )
    client.log_dict(run.info.run_id, settings.model_dump(mode="json"), "config/resolved.json")
    client.log_text(run.info.run_id, settings.dvc_file.read_text(), "data/data.dvc")
    client.log_dict(
        run.info.run_id, {p.path.stem: p.rows for p in dataset.partitions}, "data/partitions.json"
    )
    client.log_text(run.info.run_id, "\n".join(packages) + "\n", "environment/packages.txt")
    return run.info.run_id


def _fit(
    workload: WorkloadConfig,
    model: ModelConfig,
    features: FeatureConfig,
    train: TrainConfig,
    store: MlflowStore,
    rows,
    val,
    run_id: str | None,
    prefix: str = "",
    callbacks=(),
):
    """The Lightning fit with the workload's objective and network; per-epoch metrics into
    the MLflow run (``prefix``: beside another fit's curves; no run: no logging);
    ``callbacks``: more Lightning callbacks (keel tune's pruning)."""
    from lightning.pytorch.loggers import MLFlowLogger

    from keel.model import families
    from keel.model.training import fit
    from keel.workloads import build

    chosen = build(workload.name, workload.target, workload.params)
    family = families.chosen(model, chosen.net_options())
    logger = (
        MLFlowLogger(
            experiment_name=store.mlflow.experiment,
            tracking_uri=store.mlflow.tracking_uri,
            run_id=run_id,
            prefix=prefix,
        )
        if run_id
        else False
    )
    return fit(
        rows,
        val,
        features,
        train,
        objective=chosen.objective(),
        family=family,
        logger=logger,
        callbacks=callbacks,
    )


@task(name="check-model", cache_policy=NONE)
def check_model(workload: WorkloadConfig, model: ModelConfig, features: FeatureConfig, splits: Splits) -> str:
    """The network family that will train; a team's own is tried on a few train rows first
    (keel.model.training.probe): a preprocessing or network that cannot work stops the flow
    before any run opens. keel's own families are not probed. Returns the family's name."""
    from keel.model import families
    from keel.model.training import probe
    from keel.workloads import build

    chosen = build(workload.name, workload.target, workload.params)
    family = families.chosen(model, chosen.net_options())
    if families.is_team(family):
        probe(family, splits.train, features, chosen.objective())
    return family.name


@task(name="train-model", cache_policy=NONE)
def train_model(
    workload: WorkloadConfig,
    model: ModelConfig,
    features: FeatureConfig,
    train: TrainConfig,
    store: MlflowStore,
    splits: Splits,
    run_id: str | None,
):
    """Fit the Lightning model; per-epoch metrics go to the MLflow run (none: no logging)."""
    from keel.registry import tracking

    trained = _fit(workload, model, features, train, store, splits.train, splits.val, run_id)
    if run_id is None:
        return trained
    client = tracking.client(store)
    client.log_metric(run_id, "train/epochs_run", trained.epochs_run)
    if trained.best_epoch is not None and trained.best_val_loss is not None:
        client.log_metric(run_id, "val/best_epoch", trained.best_epoch)
        client.log_metric(run_id, "val/best_loss", trained.best_val_loss)
    return trained


@task(name="refit-model", cache_policy=NONE)
def refit_model(
    workload: WorkloadConfig,
    model: ModelConfig,
    features: FeatureConfig,
    train: TrainConfig,
    store: MlflowStore,
    gated,
    splits: Splits,
    blessed: bool,
    run_id: str | None,
):
    """A blessed challenger gated on the newest batch is fit again, same config and seed,
    on every batch (the holdout too), so the version registered has learnt from the newest
    data; its ``test/*`` metrics stay those of the gated fit, on rows it had never seen.
    A rejected one, or one gated on a random split, is registered as it was gated."""
    if splits.refit is None or not blessed:
        return gated
    from keel.registry import tracking

    rows, val = splits.refit
    # its curves beside the gated fit's: refit-train/loss, refit-val/loss
    refit = _fit(workload, model, features, train, store, rows, val, run_id, prefix="refit")
    if run_id is not None:
        client = tracking.client(store)
        client.log_metric(run_id, "refit/epochs_run", refit.epochs_run)
        client.log_metric(run_id, "refit/rows_train", len(rows))
        client.set_tag(run_id, "refit", "true")  # the registered weights are the refit's (replay reads it)
    return refit


@task(name="end-run", cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient)
def end_run(store: MlflowStore, run_id: str, status: str = "FINISHED") -> None:
    from keel.registry import tracking

    tracking.client(store).set_terminated(run_id, status=status)


def launched_rank() -> int:
    """The global rank an outside launcher (torchrun, one Kubernetes job per node) gave
    this process (``RANK``); 0 when there is none."""
    import os

    return int(os.environ.get("RANK", "0"))


def train_as_worker(settings: Settings) -> None:
    """A DDP rank other than 0 started by an outside launcher (train.ddp_start_method =
    "popen"): the same data version, splits and config as rank 0, then fit() to join the
    process group. No validation report, MLflow run or registration: rank 0 does those."""
    from keel.data import partitions
    from keel.data.workspace import ensure_checked_out
    from keel.workloads import load_workload

    ensure_checked_out(settings.data_store)
    frames = {p.stem: partitions.read_partition(p) for p in partitions.list_partitions(settings.data.dir)}
    splits = partitions.make_splits(settings.split, frames, load_workload(settings).split_key())
    s = settings
    _fit(s.workload, s.model, s.features, s.train, s.mlflow_store, splits.train, splits.val, None)
