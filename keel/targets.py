"""Classes that keel.toml chooses: by a shipped name from one of keel's tables, or by the
team's own ``module:Class`` target, each validating its ``params`` with its own pydantic
``Params`` model (as LightningCLI's ``class_path`` and Hydra's ``_target_`` do): a workload
(``[workload]``) and a network family (``[model]``). Resolving imports the module named,
nothing else; every error is a ConfigError naming the key (``workload.target``,
``model.params.width``). The settings loader reads a workload's defaults through here, so
the config layer never imports the workload layer; a registered model's runtime rebuilds a
team's family through here. Imports only keel.errors and pydantic."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from keel.errors import ConfigError


@dataclass(frozen=True)
class Kind:
    """One kind of class keel.toml chooses: its section, the shipped ones by name, what its
    classes must define, and the base class named in errors."""

    section: str
    shipped: dict[str, str]  # name -> "module:Class"
    base: str
    required: tuple[str, ...]


WORKLOADS = Kind(
    section="workload",
    shipped={
        "flights": "keel.workloads.flights:FlightsWorkload",
        "tabular": "keel.workloads.tabular:TabularWorkload",
        "digits": "keel.workloads.digits:DigitsWorkload",
        "entities": "keel.workloads.entities:EntitiesWorkload",
        "synthetic": "keel.workloads.synthetic:SyntheticWorkload",
        "text": "keel.workloads.text:TextWorkload",
    },
    base="keel.workloads.Workload",
    required=("Params", "defaults", "build_batch"),
)


MODELS = Kind(
    section="model",
    shipped={
        "mlp": "keel.model.families.mlp:MLP",
        "conv": "keel.model.families.conv:Conv",
        "bert": "keel.model.families.bert:Bert",
    },
    base="keel.model.families.Family",
    required=("Params", "fit_preprocessor", "load_preprocessor", "build", "rebuild"),
)


def resolve(kind: Kind, target: str) -> type:
    """``module:Class`` -> the class, checked to define what ``kind`` requires."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{kind.section}.target {target!r}: write it as module:Class")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{kind.section}.target {target!r}: {exc}") from exc
    except Exception as exc:  # the team's module fails while importing: its error and where, in one line
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise ConfigError(
            f"{kind.section}.target {target!r} does not import: {type(exc).__name__}: {exc} "
            f"({where.filename}:{where.lineno})"
        ) from exc
    if not (isinstance(cls, type) and all(hasattr(cls, name) for name in kind.required)):
        raise ConfigError(f"{kind.section}.target {target!r} is not a {kind.base} subclass")
    return cls


def choose(kind: Kind, name: str, target: str = "") -> type:
    """The class ``target`` names, else the shipped one called ``name``."""
    if target:
        return resolve(kind, target)
    if name not in kind.shipped:
        raise ConfigError(
            f"{kind.section}.name {name!r} is not shipped (known: {', '.join(sorted(kind.shipped))}); "
            f"for your own code set {kind.section}.target = 'module:Class'"
        )
    return resolve(kind, kind.shipped[name])


def instantiate(kind: Kind, cls: type, params: dict[str, Any] | None) -> Any:
    """``cls(cls.Params(**params))``; a param it refuses is a ConfigError naming its key."""
    try:
        validated = cls.Params.model_validate(params or {})  # type: ignore[attr-defined]
    except ValidationError as exc:
        problems = "; ".join(
            f"{kind.section}.params.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(
            f"[{kind.section}] params for {getattr(cls, 'name', cls.__name__)!r}: {problems}"
        ) from exc
    return cls(validated)
