"""Network families: keel's own, one file each (``mlp``, ``conv``, ``bert``), and a team's own
through the same seam (keel.model.families.base.Family, chosen by ``[model] target``).

Which family trains: ``[model]`` when it names one (a keel family by ``name``, or a team's by
``target``, with ``params``), else the workload's ``net_options()`` (``arch`` and the family's
params). A registered model's net.json names its family: ``arch`` for keel's (the table below;
none: the MLP), or ``family`` (target and params) for a team's, whose code travels inside the
model. Resolving a family imports its module only (keel.targets); an unknown one is a
ConfigError naming the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import targets
from keel.errors import ConfigError
from keel.model.families.base import Family, FamilyParams, NetFamily
from keel.model.families.bert import Bert
from keel.model.families.conv import Conv
from keel.model.families.mlp import MLP

if TYPE_CHECKING:
    from keel.config.settings import ModelConfig
    from keel.model.net import Net, NetConfig

FAMILIES: dict[str, type[Family]] = {f.name: f for f in (MLP, Conv, Bert)}
DEFAULT = "mlp"  # a net.json saved before families named none


def _make(cls: type[Family], params: dict[str, Any] | None) -> Family:
    family: Family = targets.instantiate(targets.MODELS, cls, params)
    return family


def family(name: str, params: dict[str, Any] | None = None) -> Family:
    """keel's family ``name`` with ``params``."""
    try:
        cls = FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise ConfigError(f"net family {name!r} is not one of keel's ({known})") from None
    return _make(cls, params)


def team(target: str, params: dict[str, Any] | None = None) -> Family:
    """A team's family, ``module:Class`` (its module must import where keel runs)."""
    cls = targets.resolve(targets.MODELS, target)
    if not issubclass(cls, Family):
        raise ConfigError(f"model.target {target!r} is not a keel.model.families.Family subclass")
    if not getattr(cls, "name", ""):
        raise ConfigError(f"model.target {target!r}: the class sets no name")
    return _make(cls, params)


def chosen(model: ModelConfig, net_options: dict[str, Any]) -> Family:
    """The family that trains: ``[model]``'s when it names one, else the workload's."""
    if model.target:
        return team(model.target, model.params)
    if model.name:
        return family(model.name, model.params)
    options = dict(net_options)
    return family(str(options.pop("arch", DEFAULT)), options)


def from_meta(meta: dict[str, Any]) -> Family:
    """The family a saved net.json names."""
    if "family" in meta:
        saved = meta["family"]
        return team(str(saved["target"]), dict(saved.get("params") or {}))
    return family(str(meta.get("arch", DEFAULT)))


def is_team(fam: Family) -> bool:
    """Whether ``fam`` is a team's own family (its code travels inside the models it makes)."""
    return not isinstance(fam, NetFamily)


def build(cfg: NetConfig, pretrained: bool = False) -> Net:
    """keel's network ``cfg.arch`` names, from its NetConfig (tests, benches)."""
    fam = FAMILIES[cfg.arch]
    net_cls: Any = getattr(fam, "net")  # noqa: B009 (NetFamily's class attribute)
    return net_cls(cfg, pretrained=True) if pretrained else net_cls(cfg)


__all__ = [
    "DEFAULT",
    "FAMILIES",
    "Family",
    "FamilyParams",
    "NetFamily",
    "build",
    "chosen",
    "family",
    "from_meta",
    "is_team",
    "team",
]
