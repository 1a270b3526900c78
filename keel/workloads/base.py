"""The workload seam: where a team plugs its own data into keel.

A workload is one object the tasks call for everything that depends on *what* is
being learnt; the platform (workspace, tracking, registry, lineage, validation,
serving, backends) only ever talks to this interface and never names a workload.
It answers:

- its settings (``defaults``): the ``[features]`` (label, categorical, numeric,
  slices), the gate rules, names and profiles it brings, layered just above keel's
  own defaults and below keel.toml;
- its objective (binary, multiclass, regression: keel.model.objectives owns the loss,
  output columns, metrics and their direction) and its network (``net_options``:
  the tabular MLP, a conv net over image pixels, or a pre-trained BERT encoder for a
  text column; keel.model.families, keel.model.families.bert);
- its data source: which batches exist and which one is "next" for the schedules,
  how a batch is built or read from a file, the demo batches, and the columns that
  pin a row to its train/val/test split;
- its default GX suite (``default_suite``) and what ``keel init --workload`` writes.

Everything else (the Lightning module and data module, the pyfunc that takes raw
rows, evaluation, plots, the drift view of the feature columns) follows from these
answers in the platform.

Choosing one (keel.toml)::

    [workload]
    name = "flights"                      # a shipped workload (`keel workloads` lists them)
    # target = "my_pkg.churn:ChurnWorkload"  # or your own class, as module:Class
    params = {}                           # validated by the workload's own Params model

Bringing your own: subclass ``Workload``, give it a ``name``, a one-line ``summary``,
optionally a pydantic ``Params`` model for ``[workload] params``, and implement
``build_batch`` (and ``batches`` when the source has an order, so the scheduled
retraining can take the next one); ``defaults``, ``objective``, ``net_options`` and
``default_suite`` have working defaults. Nothing here touches disk, a server or the network
at import time; a workload's own imports happen when its methods run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from keel import targets
from keel.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd

    from keel.config.settings import Settings


class WorkloadParams(BaseModel):
    """A workload's ``[workload] params``; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Workload(ABC):
    """What keel asks of a workload's data source (see the module docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[WorkloadParams]] = WorkloadParams

    def __init__(self, params: WorkloadParams) -> None:
        self.params = params

    # ---------------------------------------------------------------- settings
    def defaults(self) -> dict[str, Any]:
        """Settings this workload brings (a nested dict in keel.toml's shape, with
        ``profiles`` allowed): above keel/config/defaults.toml, below keel.toml."""
        return {}

    def check(self, settings: Settings) -> None:
        """Raise ConfigError when the settings cannot work for this workload (called
        when a command loads it)."""
        if not settings.features.label:
            raise ConfigError(f"workload {self.name!r}: features.label is empty: name the label column")
        if not (settings.features.categorical or settings.features.numeric):
            raise ConfigError(
                f"workload {self.name!r}: no feature columns: "
                "set features.categorical and/or features.numeric"
            )

    def init_toml(self) -> str:
        """The [workload] part of the keel.toml that ``keel init --workload`` writes."""
        return f'[workload]\nname = "{self.name}"\n'

    # ---------------------------------------------------------------- model
    def objective(self) -> str:
        """``binary``, ``multiclass`` or ``regression`` (keel.model.objectives): the loss, the
        output columns of a prediction and the metrics follow from it."""
        return "binary"

    def net_options(self) -> dict[str, Any]:
        """keel.net.NetConfig fields beyond the tabular MLP's ({}: the MLP). An image
        workload returns ``{"arch": "conv", "image": [C, H, W], "channels": [...]}``:
        its numeric feature columns, in order, are the pixels. A text workload returns
        ``keel.model.families.bert.encoder_options(<BERT checkpoint dir>, layers, max_length)`` and names
        its text column in ``features.text``."""
        return {}

    def default_suite(self, settings: Settings) -> dict[str, Any]:
        """The GX suite (keel.data.validation's JSON shape) that validates this workload's
        batches when ``data.suite`` names none. Default: generated from the settings'
        feature columns (keel.data.validation.generated_suite)."""
        from keel.data.validation import generated_suite

        return generated_suite(
            self.name, settings.features, self.split_key(), regression=self.objective() == "regression"
        )

    # ---------------------------------------------------------------- data source
    def batches(self) -> list[str]:
        """Every batch the source can build, oldest first; [] when batches only come
        as files (then the schedules take files only)."""
        return []

    def demo_batches(self) -> list[str]:
        """What ``keel ingest --demo`` takes."""
        return self.batches()[:1]

    def check_batch_name(self, name: str) -> None:
        """Raise InputError when ``name`` is not a batch this source can build."""
        known = self.batches()
        if name not in known:
            span = f"{known[0]}..{known[-1]}" if known else "none: give files (--file)"
            raise InputError(f"{self.name}: no batch {name!r} (the source has {span})")

    def batch_range(self, first: str, last: str) -> list[str]:
        """The batches from ``first`` to ``last`` (both included), in source order."""
        known = self.batches()
        for name in (first, last):
            self.check_batch_name(name)
            if name not in known:
                raise InputError(f"{self.name}: no batch {name!r} (the source has {known[0]}..{known[-1]})")
        i, j = known.index(first), known.index(last)
        if i > j:
            raise InputError(f"--from {first} comes after --to {last}")
        return known[i : j + 1]

    def next_batch(self, have: Sequence[str]) -> str | None:
        """The batch after the newest one already ingested (``have``: partition names),
        or the first one; None when the source has nothing newer."""
        known = self.batches()
        held = [known.index(n) for n in have if n in known]
        nxt = max(held) + 1 if held else 0
        return known[nxt] if nxt < len(known) else None

    @abstractmethod
    def build_batch(self, name: str, sample_rows: int) -> pd.DataFrame:
        """The rows of batch ``name`` (``sample_rows`` > 0: a deterministic sample)."""

    def build_batches(self, names: Sequence[str], sample_rows: int) -> dict[str, pd.DataFrame]:
        """Several batches at once (override when the source is costly to open)."""
        return {name: self.build_batch(name, sample_rows) for name in names}

    def cut_batches(
        self, names: Sequence[str], sample_rows: int, rows: Callable[[str], pd.DataFrame]
    ) -> dict[str, pd.DataFrame]:
        """For a source read once: each name checked, its rows (``rows(name)``), and a
        deterministic sample of ``sample_rows`` (> 0) in source order."""
        for name in names:
            self.check_batch_name(name)
        out = {}
        for name in names:
            frame = rows(name)
            if sample_rows and len(frame) > sample_rows:
                frame = frame.sample(n=sample_rows, random_state=0).sort_index()
            out[name] = frame.reset_index(drop=True)
        return out

    def read_file(self, path: Path) -> pd.DataFrame:
        """A user's batch file (.parquet or .csv) in this workload's schema."""
        import pandas as pd

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".csv":
            return pd.read_csv(path)
        raise InputError(f"{path}: batch files must be .parquet or .csv")

    def split_key(self) -> list[str]:
        """The columns hashed to put a row in train/val/test for good ([]: the whole row,
        so identical rows share a split)."""
        return []


def unfailable(rules: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The same gate rules with limits nothing can break (a test profile's gate: every rule
    still evaluated and recorded, none fails a model trained for one epoch)."""
    return {m: {k: (1e9 if k.startswith("max") else -1e9) for k in r} for m, r in rules.items()}


# ---------------------------------------------------------------- choosing one
SHIPPED: dict[str, str] = targets.WORKLOADS.shipped  # name -> module:Class (keel.targets)


def workload_class(name: str, target: str = "") -> type[Workload]:
    """``target``'s class (``module:Class``), else the shipped workload called ``name``."""
    cls = targets.choose(targets.WORKLOADS, name, target)
    if not issubclass(cls, Workload):
        raise ConfigError(f"workload.target {target!r} is not a keel.workloads.Workload subclass")
    return cls


def resolve_class(target: str) -> type[Workload]:
    """``module:Class`` -> the class, checked to be a Workload."""
    return workload_class("", target)


def build(name: str, target: str = "", params: dict[str, Any] | None = None) -> Workload:
    """The workload ``[workload]`` chooses, its params validated by its own Params model."""
    workload: Workload = targets.instantiate(targets.WORKLOADS, workload_class(name, target), params)
    return workload


def load_workload(settings: Settings) -> Workload:
    """The workload that settings choose (``[workload]``)."""
    w = settings.workload
    return build(w.name, w.target, w.params)


def checked_workload(settings: Settings, model: bool = True) -> Workload:
    """The workload settings choose, checked to work with them before any run opens: its own
    ``check`` and (``model``) its network family's (an unknown family, a team's target that
    does not import or refuses its params, features the family cannot read); a ConfigError
    names the key. ``model=False`` imports no network code (commands that build none)."""
    workload = load_workload(settings)
    workload.check(settings)
    if model:
        check_family(settings, workload)
    return workload


def check_family(settings: Settings, workload: Workload) -> None:
    """The network family settings choose (``[model]``, else the workload's) builds and reads
    the features, and takes the adapter ``[train] adapter`` asks for; a ConfigError names the key."""
    from keel.model import families

    if settings.model.name or settings.model.target:  # [model] chooses: its error names model.<key>
        family = families.chosen(settings.model, {})
    else:
        try:
            family = families.chosen(settings.model, workload.net_options())
        except ConfigError as exc:
            raise ConfigError(f"workload {workload.name!r}: {exc}") from exc
    try:
        family.check(settings.features)
        if settings.train.adapter:  # the family takes one, its target modules exist
            family.check_adapter(settings.train.adapter, settings.train.lora.target_modules)
    except ConfigError as exc:
        raise ConfigError(f"workload {workload.name!r}, net family {family.name!r}: {exc}") from exc


def init_workspace(directory: Path, workload_toml: str = "") -> Path:
    """``keel init``: keel.data.workspace.init_workspace, with suite.json the default GX suite
    of the workload ``workload_toml`` chooses (Workload.init_toml; "" = the default one)."""
    from keel.data.workspace import init_workspace as init

    return init(directory, workload_toml, lambda s: load_workload(s).default_suite(s))


def load_suite_for(settings: Settings) -> dict[str, Any]:
    """The GX suite of ``data.suite`` when set, else the workload's default suite."""
    from keel.data.validation import load_suite

    if settings.data.suite:
        return load_suite(settings.data.suite)
    return load_workload(settings).default_suite(settings)


def shipped() -> list[tuple[str, str]]:
    """(name, summary) of every shipped workload."""
    return [(name, resolve_class(target).summary) for name, target in sorted(SHIPPED.items())]
