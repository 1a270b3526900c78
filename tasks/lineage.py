"""Lineage and replay tasks: read what a model version recorded, rebuild its data
from the DVC remote, and compare a retrained model with it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import DataStore, MlflowStore, ReportsConfig, Settings, TrainConfig
from keel.data.types import DatasetRef
from keel.data.workspace import DataVersionError
from keel.errors import KeelError, NotFoundError, retry_transient
from keel.registry.lineage import Lineage, ReplayReport


@task(
    name="load-lineage",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def load_lineage(store: MlflowStore, data: DataStore, version: str) -> Lineage:
    """What version ``version`` recorded (its config migrated to this keel's layout); ``data``:
    the workspace whose git origin a replay clones."""
    from mlflow.exceptions import MlflowException

    from keel.config.settings import migrate
    from keel.data.workspace import origin
    from keel.registry import tracking

    client = tracking.client(store)
    name = store.mlflow.model_name
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        # only the registry's own "no such version" is "not found"; a server that is down,
        # a refused request or a bad store keeps its error (and is retried when transient)
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise NotFoundError(
            f"model '{name}' has no version {version!r} in {store.mlflow.registry_uri}"
        ) from exc
    if not mv.run_id:
        raise KeelError(f"model '{name}' v{version} was registered without a run: no lineage recorded")
    run_id: str = mv.run_id
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:

        def text(path: str) -> str:
            return Path(client.download_artifacts(run_id, path, tmp)).read_text()

        dvc_file = text("data/data.dvc")
        partitions = json.loads(text("data/partitions.json"))
        # recorded by this keel or an older one: brought to the current layout
        config = migrate(json.loads(text("config/resolved.json")))
        packages = text("environment/packages.txt").split()
    return Lineage(
        name=name,
        version=str(mv.version),
        run_id=run_id,
        data_version=mv.tags.get("data_version", run.data.tags.get("data_version", "")),
        dvc_file=dvc_file,
        partitions=partitions,
        git_sha=mv.tags.get("git_sha", ""),
        data_commit=mv.tags.get("data_commit", ""),
        origin=origin(data),
        config=config,
        config_hash=mv.tags.get("config_hash", ""),
        env_hash=mv.tags.get("env_hash", ""),
        packages=packages,
        weights_sha256=mv.tags.get("weights_sha256", ""),
        metrics=dict(run.data.metrics),
        derived_from=mv.tags.get("derived_from", ""),
        compression=mv.tags.get("compression", ""),
        sparsity=float(mv.tags.get("compress.sparsity", 0.0)),
        recovery_epochs=int(mv.tags.get("compress.recovery_epochs", 0)),
        recovery=mv.tags.get("compress.recovery", "labels"),
        refit=mv.tags.get("refit") == "true",
        model_code={k.removeprefix("model."): v for k, v in mv.tags.items() if k.startswith("model.")},
        adapter={
            ("method" if k == "adapter" else k.removeprefix("adapter.")): v
            for k, v in mv.tags.items()
            if k == "adapter" or k.startswith("adapter.")
        },
        numerics=mv.tags.get("numerics", ""),
    )


@task(name="open-scratch", cache_policy=NONE)
def open_scratch() -> Path:
    """A temp workspace for a replay, outside the user's workspace."""
    return Path(tempfile.mkdtemp(prefix="keel-replay-"))


@task(name="discard-scratch", cache_policy=NONE)
def discard_scratch(directory: Path) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


@task(
    name="materialise-dataset",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def materialise_dataset(
    store: MlflowStore, data: DataStore, lineage: Lineage, directory: Path
) -> tuple[Settings, DatasetRef]:
    """The recorded data version, pulled from the remote under ``directory`` (never
    data/) the way a teammate would (clone, checkout of the recorded data commit, dvc
    pull), and settings that train exactly as recorded there (with this workspace's stores)."""
    from keel.config.settings import Settings as S
    from keel.data import partitions
    from keel.data.types import Partition
    from keel.data.workspace import materialise, read_data_version
    from tasks.data import pq_rows

    root = materialise(data, lineage.dvc_file, directory, lineage.data_commit)
    data_dir = root / data.dir.relative_to(data.workspace)
    recorded = dict(lineage.config)
    replay = S.model_validate(
        {
            **recorded,
            "workspace": str(root),
            "data": {**recorded["data"], "dir": str(data_dir)},
            "reports": {"dir": str(root / "reports")},
            "mlflow": store.mlflow.model_dump(),
            "dvc": data.dvc.model_dump(),
        }
    )
    if replay.config_hash() != lineage.config_hash:
        raise KeelError(
            f"recorded config of v{lineage.version} hashes to {replay.config_hash()}, "
            f"not the recorded {lineage.config_hash}"
        )
    version = read_data_version(root / data.dvc_file.relative_to(data.workspace))
    if version is None:
        raise DataVersionError(f"the recorded data.dvc of v{lineage.version} names no data version")
    parts = tuple(Partition(p, pq_rows(p)) for p in partitions.list_partitions(data_dir))
    return replay, DatasetRef(version, parts)


@task(name="recompress", cache_policy=NONE)
def recompress(lineage: Lineage, model, splits, directory: Path, train: TrainConfig | None = None):
    """A compressed version's replay: the retrained source, compressed again the same way
    (traced on the same held-out rows, pruned at the recorded sparsity and fine-tuned for the
    recorded recovery epochs with the source's ``train``); any other version: the model as it is."""
    if not lineage.compression:
        return model
    from keel.model.compress import compress
    from tasks.compress import TRACE_ROWS, recovery

    sample = splits.test.head(TRACE_ROWS).reset_index(drop=True)
    epochs = lineage.recovery_epochs
    recover = recovery(model, splits, train, epochs, lineage.recovery) if epochs and train else None
    return compress(model, lineage.compression, sample, directory / "variant", lineage.sparsity, recover)


@task(name="recorded-model", cache_policy=NONE)
def recorded_model(lineage: Lineage, gated, built):
    """The model whose test metrics the version recorded: a compressed variant's own; any
    other version's, the gated fit's (a refit is scored on rows it trained on)."""
    return built if lineage.compression else gated


@task(name="compare-replay", cache_policy=NONE)
def compare_replay(lineage: Lineage, model, evaluation) -> ReplayReport:
    """A compressed variant compares its model file's checksum, others their weights'."""
    from keel.model.runtime.adapters import saved_state
    from keel.registry import packaging
    from keel.registry.lineage import compare, environment_lock, numerics, weights_sha256

    weights = model.sha256 if lineage.compression else weights_sha256(saved_state(model.net))
    code = packaging.code_identity(model.family)
    return compare(lineage, evaluation.metrics, weights, environment_lock()[1], code, numerics())


@task(name="write-replay-report", cache_policy=NONE)
def write_replay_report(reports: ReportsConfig, report: ReplayReport) -> Path:
    from prefect.artifacts import create_markdown_artifact

    md, js = report.paths(reports.dir)
    md.parent.mkdir(parents=True, exist_ok=True)
    js.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    md.write_text(report.markdown())
    create_markdown_artifact(
        key="keel-replay", markdown=report.markdown(), description=f"replay of {md.stem}"
    )
    return md
