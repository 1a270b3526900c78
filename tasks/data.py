"""Data tasks: build batches, validate them, version them with DVC, resolve a data version,
validate it, split it. Each takes the settings it reads: the workspace's ``DataStore`` (git,
data/ and the DVC remote), ``[workload]`` where the workload's source answers; the two
validation tasks take the whole settings because a workload's default suite is built from
them (``Workload.default_suite(settings)``: a team's own workload may read any section)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import DataStore, Settings, SplitConfig, WorkloadConfig
from keel.data import partitions
from keel.data.types import Batch, DatasetRef, Partition, Splits
from keel.data.validation import ValidationReport
from keel.data.workspace import DataVersion, DataVersionError
from keel.errors import InputError, retry_transient


def _workload(cfg: WorkloadConfig):
    from keel.workloads import build

    return build(cfg.name, cfg.target, cfg.params)


@task(name="build-batches", cache_policy=NONE)
def build_batches(
    workload: WorkloadConfig, data: DataStore, sample_rows: int, months: list[str], files: dict[str, Path]
) -> list[Batch]:
    """Batches the workload's source builds (``months``: their names, e.g. YYYY-MM;
    ``sample_rows`` > 0: a deterministic sample of each) and/or rows from files, in memory:
    nothing is written."""
    source = _workload(workload)
    batches = []
    for month, frame in source.build_batches(months, sample_rows).items():
        path = partitions.partition_path(data.dir, month)
        batches.append(Batch(month, str(path.relative_to(data.workspace)), frame))
    for name, path in files.items():
        path = Path(path)
        target = partitions.partition_path(data.dir, name)
        if target.exists():
            raise InputError(
                f"{path}: partition '{name}' already exists ({target}); give the batch another name (--name)"
            )
        batches.append(Batch(name, str(path), source.read_file(path)))
    return batches


def _items(step: str, unit: str) -> Callable[[int, int], None]:
    """A step's item count, as keel.progress records (counted lines on a keel console)."""
    from keel import progress

    return lambda done, total: progress.items(step, done, total, unit)


@task(name="validate-batches", cache_policy=NONE)
def validate_batches(settings: Settings, batches: list[Batch]) -> ValidationReport:
    """The suite on each new batch alone, before anything touches data/."""
    from keel.data.validation import validate_frames, write_report
    from keel.workloads import load_suite_for

    report = validate_frames(
        {b.source: b.frame for b in batches}, load_suite_for(settings), _items("validate-batches", "batches")
    )
    paths = write_report(
        report, settings.reports.dir / "validation", "ingest-" + "-".join(b.name for b in batches)[:80]
    )
    return replace(report, paths=paths)


@task(
    name="commit-batches",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def commit_batches(data: DataStore, batches: list[Batch]) -> DataVersion:
    """Write the partitions, dvc add + push, record the version and commit it to git
    (data.dvc and the version log only), one ingest at a time per workspace. A journal
    lets the next keel command restore the previous version if this is killed halfway."""
    from keel.data import workspace as ws

    with ws.ingest_lock(data):
        ws.recover_ingest(data, locked=True)
        ws.refuse_uncommitted_pointer(data)
        ws.begin_ingest(data)
        for batch in batches:
            partitions.write_partition(batch.frame, partitions.partition_path(data.dir, batch.name))
        version = ws.add_and_push(data)
        rows = {p.stem: pq_rows(p) for p in partitions.list_partitions(data.dir)}
        added = [b.name for b in batches]
        ws.record_version(data, version, rows, added)
        ws.commit_data_version(data, version, added)
        ws.end_ingest(data)
    return version


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


@task(
    name="resolve-dataset",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def resolve_dataset(data: DataStore) -> DatasetRef:
    """The current data version (data.dvc), checked out and unmodified."""
    from keel.data.workspace import ensure_checked_out

    version = ensure_checked_out(data)
    parts = tuple(Partition(p, pq_rows(p)) for p in partitions.list_partitions(data.dir))
    if not parts:
        raise DataVersionError(f"{data.dir} holds no .parquet partitions")
    return DatasetRef(version, parts)


@task(name="validate-data", cache_policy=NONE)
def validate_data(settings: Settings, dataset: DatasetRef) -> ValidationReport:
    """Run the GX suite on every partition and keep the result (JSON + markdown)
    under reports/validation/<data version>.*"""
    from keel.data.validation import validate_frames, write_report
    from keel.workloads import load_suite_for

    suite = load_suite_for(settings)
    frames = {
        str(p.path.relative_to(settings.workspace)): partitions.read_partition(p.path)
        for p in dataset.partitions
    }
    report = validate_frames(frames, suite, _items("validate-data", "partitions"))
    paths = write_report(report, settings.reports.dir / "validation", dataset.version.short)
    return replace(report, paths=paths)


@task(name="require-valid", cache_policy=NONE)
def require_valid(report: ValidationReport) -> ValidationReport:
    """Publish the validation summary to Prefect; stop the flow with an error naming
    file, column and rule when the data broke the suite."""
    from prefect.artifacts import create_markdown_artifact

    from keel.data.validation import DataValidationError

    create_markdown_artifact(
        key="keel-validation",
        markdown=report.summary_markdown(),
        description=f"GX validation: {report.status}",
    )
    if not report.success:
        labels = ("full result", "summary")
        where = "".join(f"\n{label}: {path}" for label, path in zip(labels, report.paths, strict=False))
        raise DataValidationError(report.error_message() + where, report.paths)
    return report


@task(name="load-splits", cache_policy=NONE)
def load_splits(workload: WorkloadConfig, split: SplitConfig, dataset: DatasetRef) -> Splits:
    """train/val/test of the data version (keel.data.partitions.make_splits), each row pinned
    to its split by the workload's split key."""
    frames = {p.path.stem: partitions.read_partition(p.path) for p in dataset.partitions}
    return partitions.make_splits(split, frames, _workload(workload).split_key())


@task(
    name="verify-remote",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def verify_remote(data: DataStore, dataset: DatasetRef) -> DatasetRef:
    """Check, object by object, that the DVC remote holds this data version."""
    from keel.data.workspace import require_in_remote

    require_in_remote(data, dataset.version.md5)
    return dataset
