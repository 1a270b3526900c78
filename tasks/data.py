"""Data tasks: build monthly partitions, version them with DVC, resolve, validate, split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import Settings
from keel.data import partitions
from keel.data.validation import ValidationReport
from keel.data.workspace import DataVersion, DataVersionError
from keel.errors import InputError, retry_transient


@dataclass(frozen=True)
class Partition:
    path: Path
    rows: int


@dataclass(frozen=True)
class DatasetRef:
    """A DVC data version and the partitions it holds."""

    version: DataVersion
    partitions: tuple[Partition, ...]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    @property
    def partition_names(self) -> list[str]:
        return [p.path.stem for p in self.partitions]


@dataclass(frozen=True)
class Holdout:
    """The rows the gate compares challenger and champion on (``gate/gate.json``'s ``holdout``)."""

    scheme: str  # "newest": whole batches newer than every training row; "random": a hash share of each
    batches: tuple[str, ...]  # the batches the test rows come from
    rows: int
    note: str = ""  # why the scheme asked for was not used

    def to_json(self) -> dict[str, object]:
        return {"scheme": self.scheme, "batches": list(self.batches), "rows": self.rows, "note": self.note}


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    holdout: Holdout
    # "newest" holdout: train/val over every batch, the holdout too, for the refit of a
    # blessed challenger (tasks.train.refit_model); None: the model is never refit
    refit: tuple[pd.DataFrame, pd.DataFrame] | None = None

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass(frozen=True)
class Batch:
    """One batch to ingest: the partition it becomes, where it came from, its rows."""

    name: str
    source: str  # shown in validation errors: the user's file, or data/<month>.parquet
    frame: pd.DataFrame


@task(name="build-batches", cache_policy=NONE)
def build_batches(settings: Settings, months: list[str], files: dict[str, Path]) -> list[Batch]:
    """Batches the workload's source builds (``months``: their names, e.g. YYYY-MM) and/or
    rows from files, in memory: nothing is written."""
    from keel.workloads import load_workload

    workload = load_workload(settings)
    batches = []
    for month, frame in workload.build_batches(months, settings.data.sample_rows).items():
        path = partitions.partition_path(settings.data.dir, month)
        batches.append(Batch(month, str(path.relative_to(settings.workspace)), frame))
    for name, path in files.items():
        path = Path(path)
        target = partitions.partition_path(settings.data.dir, name)
        if target.exists():
            raise InputError(
                f"{path}: partition '{name}' already exists ({target}); give the batch another name (--name)"
            )
        batches.append(Batch(name, str(path), workload.read_file(path)))
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
def commit_batches(settings: Settings, batches: list[Batch]) -> DataVersion:
    """Write the partitions, dvc add + push, record the version and commit it to git
    (data.dvc and the version log only), one ingest at a time per workspace. A journal
    lets the next keel command restore the previous version if this is killed halfway."""
    from keel.data import workspace as ws

    with ws.ingest_lock(settings):
        ws.recover_ingest(settings, locked=True)
        ws.refuse_uncommitted_pointer(settings)
        ws.begin_ingest(settings)
        for batch in batches:
            partitions.write_partition(batch.frame, partitions.partition_path(settings.data.dir, batch.name))
        version = ws.add_and_push(settings)
        rows = {p.stem: pq_rows(p) for p in partitions.list_partitions(settings.data.dir)}
        added = [b.name for b in batches]
        ws.record_version(settings, version, rows, added)
        ws.commit_data_version(settings, version, added)
        ws.end_ingest(settings)
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
def resolve_dataset(settings: Settings) -> DatasetRef:
    """The current data version (data.dvc), checked out and unmodified."""
    from keel.data.workspace import ensure_checked_out

    version = ensure_checked_out(settings)
    parts = tuple(Partition(p, pq_rows(p)) for p in partitions.list_partitions(settings.data.dir))
    if not parts:
        raise DataVersionError(f"{settings.data.dir} holds no .parquet partitions")
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
def load_splits(settings: Settings, dataset: DatasetRef) -> Splits:
    from keel.workloads import load_workload

    frames = {p.path.stem: partitions.read_partition(p.path) for p in dataset.partitions}
    return make_splits(settings, frames, load_workload(settings).split_key())


def make_splits(settings: Settings, frames: dict[str, pd.DataFrame], key: list[str]) -> Splits:
    """``split.holdout = "newest"``: train/val (hash split, ``val_pct``) from the older
    batches, test = every row of the newest batch, and train/val over all batches for the
    refit. ``"random"`` (or one batch): train/val/test by hash buckets of every batch."""
    cfg = settings.split
    older, newest, note = partitions.holdout_batches(list(frames), cfg.holdout)
    if not newest:
        everything = pd.concat([frames[n] for n in older], ignore_index=True)
        train, val, test = partitions.split_frame(everything, cfg.val_pct, cfg.test_pct, cfg.salt, key)
        return Splits(train, val, test, Holdout("random", tuple(older), len(test), note))
    past = pd.concat([frames[n] for n in older], ignore_index=True)
    train, val, _ = partitions.split_frame(past, cfg.val_pct, 0, cfg.salt, key)
    test = pd.concat([frames[n] for n in newest], ignore_index=True)
    refit = None
    if cfg.refit:
        everything = pd.concat([past, test], ignore_index=True)
        all_train, all_val, _ = partitions.split_frame(everything, cfg.val_pct, 0, cfg.salt, key)
        refit = (all_train, all_val)
    return Splits(train, val, test, Holdout("newest", tuple(newest), len(test)), refit)


@task(
    name="verify-remote",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def verify_remote(settings: Settings, dataset: DatasetRef) -> DatasetRef:
    """Check, object by object, that the DVC remote holds this data version."""
    from keel.data.workspace import require_in_remote

    require_in_remote(settings, dataset.version.md5)
    return dataset
