"""The MLflow edge: clients and experiments from a workspace's ``MlflowStore``
(keel.config.settings: its stores, experiment, model name and workspace), never from globals
set at import.

Every run keel opens carries the host, PID and process start time of its process
(``process_tags``). The first time a process opens a workspace's store, keel marks that
workspace's runs that are still RUNNING but whose process is gone (killed, or its
machine rebooted) as KILLED, with a ``keel.killed_reason`` tag (``reap_orphaned_runs``);
runs of other hosts are left alone, since their processes cannot be seen from here.
The CLI does it after its pre-flight check; the tasks that open runs do it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.config.settings import DataStore, MlflowStore

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput

KILLED_TAG = "keel.killed_reason"
HOST_TAG, PID_TAG, PID_STARTED_TAG, WORKSPACE_TAG = (
    "keel.host",
    "keel.pid",
    "keel.pid_started",
    "keel.workspace",
)

# MLflow 3's UI opens an experiment on the view its kind says: keel's experiments hold model
# training runs, not GenAI traces (the UI's own values: custom_model_development, genai_development).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"

# (tracking URI, workspace) pairs whose orphaned runs this process has already marked:
# the check runs once per process and store, not on every client.
_reaped: set[tuple[str, str]] = set()


# sqlite databases this process has opened under their file lock (see ``client``).
_opened: set[Path] = set()


def client(store: MlflowStore) -> MlflowClient:
    """A client of the workspace's tracking and registry stores.

    MLflow creates and migrates a sqlite store when a process first opens it, and two
    processes doing that at once on a new workspace (two commands started together, a
    test polling the store while a command starts) break the migration ("duplicate
    column name", "expected to match one row"). So the first open of a sqlite store in a
    process happens while holding a file lock next to its database; later opens hit
    MLflow's own store cache. Server-backed stores take no lock."""
    from mlflow import MlflowClient

    ml = store.mlflow
    dbs = {db for db in map(_sqlite_path, (ml.tracking_uri, ml.registry_uri)) if db and db not in _opened}
    if not dbs:
        return MlflowClient(tracking_uri=ml.tracking_uri, registry_uri=ml.registry_uri)
    with contextlib.ExitStack() as locks:
        for db in sorted(dbs):
            locks.enter_context(_file_lock(db.parent / f"{db.name}.lock"))
        c = MlflowClient(tracking_uri=ml.tracking_uri, registry_uri=ml.registry_uri)  # opens tracking
        c.search_registered_models(max_results=1)  # opens (and so creates) the registry store
    _opened.update(dbs)
    return c


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def reap_once(store: MlflowStore) -> list[str]:
    """``reap_orphaned_runs`` the first time this process opens a workspace's store (the
    CLI after its pre-flight check, and the tasks that open runs); later calls do nothing."""
    key = (store.mlflow.tracking_uri, str(store.workspace))
    if key in _reaped:
        return []
    _reaped.add(key)
    return reap_orphaned_runs(store, client(store))


def _process_started(pid: int) -> float | None:
    """The start time of a live process, or None when there is none (zombies included)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except psutil.NoSuchProcess:
        return None


def process_tags(store: MlflowStore) -> dict[str, str]:
    """Who holds a run open: host, PID and the PID's start time (guards against PID reuse)."""
    started = _process_started(os.getpid())
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        PID_STARTED_TAG: f"{started:.3f}" if started is not None else "",
        WORKSPACE_TAG: str(store.workspace),
    }


def workspace_experiments(store: MlflowStore, c: MlflowClient) -> list[str]:
    names = (store.mlflow.experiment, store.mlflow.experiment + store.monitoring_suffix)
    return [e.experiment_id for e in (c.get_experiment_by_name(n) for n in names) if e is not None]


def _holder_alive(tags: Mapping[str, str]) -> bool:
    try:
        pid, started = int(tags[PID_TAG]), float(tags[PID_STARTED_TAG])
    except (KeyError, ValueError):
        return True  # not recorded: keel cannot tell, so it does not touch the run
    now = _process_started(pid)
    return now is not None and abs(now - started) < 1.0


def reap_orphaned_runs(store: MlflowStore, c: MlflowClient) -> list[str]:
    """Mark this workspace's RUNNING runs whose process on this host is gone as KILLED."""
    exp_ids = workspace_experiments(store, c)
    if not exp_ids:
        return []
    host = socket.gethostname()
    runs = c.search_runs(
        exp_ids,
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
        max_results=500,
    )
    killed = []
    for run in runs:
        tags = run.data.tags
        if tags.get(WORKSPACE_TAG) != str(store.workspace) or _holder_alive(tags):
            continue
        when = datetime.now(UTC).isoformat(timespec="seconds")
        c.set_tag(
            run.info.run_id,
            KILLED_TAG,
            f"process {tags[PID_TAG]} on {host} ended without closing the run (killed or crashed); "
            f"marked KILLED by keel (pid {os.getpid()}) at {when}",
        )
        c.set_terminated(run.info.run_id, status="KILLED")
        killed.append(run.info.run_id)
    return killed


def killed_runs(store: MlflowStore, max_results: int = 5) -> list[dict[str, str]]:
    """The newest runs of this workspace that keel marked KILLED: name, id and why."""
    c = client(store)
    exp_ids = workspace_experiments(store, c)
    if not exp_ids:
        return []
    runs = c.search_runs(
        exp_ids,
        filter_string=f"attributes.status = 'KILLED' and tags.`{WORKSPACE_TAG}` = '{store.workspace}'",
        max_results=max_results,
        order_by=["attributes.start_time DESC"],
    )
    return [
        {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name or "",
            "reason": r.data.tags.get(KILLED_TAG, ""),
        }
        for r in runs
        if KILLED_TAG in r.data.tags
    ]


def dataset_input(data: DataStore, md5: str, rows: int, partitions: list[str], commit: str) -> DatasetInput:
    """The data version as an MLflow dataset input: DVC md5 as the digest, the DVC remote
    (and the git commit of data.dvc) as the source, so the runs table's Dataset column and
    MLflow's lineage show which version a run trained on."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source = {
        "dvc_remote": data.dvc.remote,
        "url": data.dvc.remote_url,
        "path": data.dir.name,
        "md5": md5,
        "git_commit": commit,
    }
    dataset = Dataset(
        name=f"{data.dir.name}@{md5.removesuffix('.dir')[:10]}",
        digest=md5.removesuffix(".dir")[:36],
        source_type="dvc",
        source=json.dumps(source),
        profile=json.dumps({"num_rows": rows, "partitions": partitions}),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


def use_tracking(store: MlflowStore) -> None:
    """Point MLflow's fluent API (needed by log_model) at the workspace's store."""
    import mlflow

    client(store)  # a sqlite store is created under its lock before the fluent API opens it

    mlflow.set_tracking_uri(store.mlflow.tracking_uri)
    mlflow.set_registry_uri(store.mlflow.registry_uri)


def load_pyfunc(store: MlflowStore, uri: str) -> Any:
    """``mlflow.pyfunc.load_model(uri)`` in a keel process. MLflow puts the model's code
    directory (keel's slim model runtime, keel.registry.packaging) on ``sys.path``, where a
    process this one starts later (a DDP rank, Prefect's process pool) would import keel from
    it and miss the platform. This process runs its own keel, and the packages the model
    imported while loading keep resolving their modules through their own ``__path__``, so
    the directory is taken off ``sys.path`` again."""
    import sys

    import mlflow

    use_tracking(store)
    before = list(sys.path)
    model = mlflow.pyfunc.load_model(uri)
    sys.path[:] = [p for p in sys.path if p in before]
    return model


def ensure_experiment(store: MlflowStore, suffix: str = "") -> str:
    """The training experiment, or ``<experiment><suffix>`` (``-monitoring``, ``-ledger``,
    ``-guardrail``, ``-shadow``: keel's own runs kept apart from the training runs);
    created on first use, its artifacts beside the training experiment's."""
    c = client(store)
    name = store.mlflow.experiment + suffix
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older keel: the UI guessed its kind
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return str(exp.experiment_id)
    root = store.mlflow.artifact_root
    location = f"{root.rstrip('/')}/{name}" if root else None
    tags = {EXPERIMENT_KIND_TAG: MODEL_TRAINING}
    return str(c.create_experiment(name, artifact_location=location, tags=tags))


def tagged_run(
    store: MlflowStore,
    suffix: str,
    tag: str,
    value: str,
    run_name: str,
    create: bool = True,
    tags: Mapping[str, str] | None = None,  # more tags for a run created here
) -> str | None:
    """The one run of ``<experiment><suffix>`` tagged ``tag = value`` (a model's ledger, its
    guardrail history, a shadow pair), created finished on first use (None: absent, not created)."""
    c = client(store)
    experiment_id = ensure_experiment(store, suffix)
    runs = c.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
    if runs:
        return str(runs[0].info.run_id)
    if not create:
        return None
    run = c.create_run(experiment_id, run_name=run_name, tags={**(tags or {}), tag: value})
    c.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested config -> flat, stable MLflow param names (``train.lr``)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key in sorted(value):
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), value[key]))
        return out
    if isinstance(value, (list, tuple)):
        return {prefix: json.dumps(list(value))}
    return {prefix: str(value)}


def current_alias_version(store: MlflowStore, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    db = _sqlite_path(store.mlflow.registry_uri)
    if db is not None and not db.exists():
        return None  # no registry store yet, so nothing registered: not worth creating one to ask
    try:
        mv = client(store).get_model_version_by_alias(store.mlflow.model_name, alias)
        return str(mv.version)
    except MlflowException as exc:
        # "no such model" / "no such alias" mean none yet; anything else (server down) is raised
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        # MLflow's basic-auth app answers 403 for a model that does not exist (yet): look it up
        name = store.mlflow.model_name
        if exc.error_code == "PERMISSION_DENIED" and not client(store).search_registered_models(
            f"name = '{name}'"
        ):
            return None
        raise
