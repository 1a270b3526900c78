"""Data tasks: build monthly partitions, version them with DVC, resolve, validate, split."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from keel import dataset as ds
from keel.settings import Settings
from keel.validation import ValidationReport
from keel.workspace import DataVersion, DataVersionError


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
    def months(self) -> list[str]:
        return [p.path.stem for p in self.partitions]


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@task(name="build-partitions", cache_policy=NONE)
def build_partitions(settings: Settings, months: list[str]) -> list[Partition]:
    """Write one parquet partition per month (deterministic bytes) under data/."""
    flights, weather = ds.load_source()
    out = []
    for month in months:
        frame = ds.build_month(flights, weather, month, sample_rows=settings.data.sample_rows)
        path = ds.write_partition(frame, ds.partition_path(settings.data.dir, month))
        out.append(Partition(path, len(frame)))
    return out


@task(name="version-data", cache_policy=NONE, retries=1, retry_delay_seconds=2)
def version_data(settings: Settings) -> DataVersion:
    """dvc add data/ and push that version to the remote (a store: retried once)."""
    from keel.workspace import add_and_push

    return add_and_push(settings)


@task(name="resolve-dataset", cache_policy=NONE, retries=1, retry_delay_seconds=2)
def resolve_dataset(settings: Settings) -> DatasetRef:
    """The current data version (data.dvc), checked out and unmodified."""
    import pyarrow.parquet as pq

    from keel.workspace import ensure_checked_out

    version = ensure_checked_out(settings)
    parts = tuple(Partition(p, pq.ParquetFile(p).metadata.num_rows)
                  for p in ds.list_partitions(settings.data.dir))
    if not parts:
        raise DataVersionError(f"{settings.data.dir} holds no YYYY-MM.parquet partitions")
    return DatasetRef(version, parts)


@task(name="validate-data", cache_policy=NONE)
def validate_data(settings: Settings, dataset: DatasetRef) -> ValidationReport:
    """Run the GX suite on every partition and keep the result (JSON + markdown)
    under reports/validation/<data version>.*"""
    from keel.validation import load_suite, validate_frames, write_report

    suite = load_suite(settings.data.suite)
    frames = {str(p.path.relative_to(settings.workspace)): ds.read_partition(p.path)
              for p in dataset.partitions}
    report = validate_frames(frames, suite)
    paths = write_report(report, settings.reports.dir / "validation", dataset.version.short)
    return replace(report, paths=paths)


@task(name="require-valid", cache_policy=NONE)
def require_valid(report: ValidationReport) -> ValidationReport:
    """Publish the validation summary to Prefect; stop the flow with an error naming
    file, column and rule when the data broke the suite."""
    from prefect.artifacts import create_markdown_artifact

    from keel.validation import DataValidationError

    create_markdown_artifact(key="keel-validation", markdown=report.summary_markdown(),
                             description=f"GX validation: {report.status}")
    if not report.success:
        where = "".join(f"\n{label}: {path}" for label, path in zip(("full result", "summary"),
                                                                     report.paths))
        raise DataValidationError(report.error_message() + where, report.paths)
    return report


@task(name="load-splits", cache_policy=NONE)
def load_splits(settings: Settings, dataset: DatasetRef) -> Splits:
    frame = ds.read_partitions(p.path for p in dataset.partitions)
    train, val, test = ds.split_frame(frame, settings.split.val_pct, settings.split.test_pct,
                                      settings.split.salt)
    return Splits(train, val, test)
