"""The network families keel ships, one file each (``mlp``, ``conv``, ``bert``), and the one
table that lists them by the name a model saves in its net.json (``arch``). A workload chooses
one with ``net_options()["arch"]``; an unknown name is a ConfigError at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError
from keel.model.families import bert, conv, mlp
from keel.model.families.base import Family

if TYPE_CHECKING:
    from keel.model.net import Net, NetConfig

FAMILIES: dict[str, Family] = {f.name: f for f in (mlp.FAMILY, conv.FAMILY, bert.FAMILY)}
DEFAULT = "mlp"  # a net.json saved before families named none


def family(name: str) -> Family:
    """The family ``name`` (a model's saved ``arch``)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"net family {name!r} is not one of keel's ({', '.join(sorted(FAMILIES))})"
        ) from None


def chosen(options: dict[str, Any]) -> Family:
    """The family a workload's net options choose (``arch``; none: the MLP)."""
    return family(str(options.get("arch", DEFAULT)))


def of(net: Net) -> Family:
    """The family of a built network."""
    cfg: NetConfig = getattr(net, "cfg")  # noqa: B009 (a module's attribute, typed here)
    return family(cfg.arch)


def build(cfg: NetConfig, pretrained: bool = False) -> Net:
    """The network ``cfg.arch`` names; ``pretrained``: from the family's checkpoint (training)."""
    return family(cfg.arch).build(cfg, pretrained=pretrained)


__all__ = ["DEFAULT", "FAMILIES", "Family", "build", "chosen", "family", "of"]
