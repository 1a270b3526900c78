"""The model seam: what a network family declares, in one place. keel's own families (mlp,
conv, bert: one file each, listed in keel.model.families) and a team's own (``[model] target
= "module:Class"``) implement the same class.

A family answers, with working defaults where keel has them:

- ``check(features)``: can the configured features feed it (a ConfigError naming the key,
  at start-up);
- its preprocessing: ``fit_preprocessor(frame, features)`` fitted on the train split, an
  object with ``transform(frame) -> (a, b)`` (two arrays, rows first: the net's two inputs),
  ``columns`` (the raw feature columns it reads) and ``to_dict()`` (JSON: it travels inside
  the registered model, never pickled); ``load_preprocessor(data)`` rebuilds it at load.
  Default: keel's table preprocessing (category codes; scaled numerics + missing flags);
- its network: ``network(outputs, preprocessor)``, a ``torch.nn.Module`` whose
  ``forward(a, b)`` returns the objective's raw outputs (``outputs`` wide: shape (rows,) for
  one, (rows, outputs) for more). It may be a whole ``lightning.LightningModule`` with its
  own ``training_step`` / ``configure_optimizers``: keel then trains it as it is (its batches
  are ``(a, b, y)``, y as the objective encodes the labels) and keeps the epoch with the
  lowest ``val/loss``, which its ``validation_step`` logs. Otherwise keel trains the net with
  the objective's loss and AdamW (``[train] lr``, ``weight_decay``);
- optionally an adapter seam (``[train] adapter = "lora"``, keel.model.runtime.adapters):
  ``adapter_root``, the attribute of its net holding the pre-trained module an adapter
  attaches to, ``adapter_modules()`` (the linear layers there, by name, known from the
  settings alone), ``base_checkpoint(net)`` (the file its pre-trained weights come from) and
  ``load_base(net, path)``. A family without a root takes no adapter (a ConfigError naming
  ``train.adapter``);
- optionally its explanation method (``explanation_method``: keel.model.explain; default
  ``permutation``: model-agnostic, over the raw columns) and its ONNX inputs
  (``onnx_inputs``, ``onnx_axes``) for ``keel compress``.

keel's families build their nets from a ``NetConfig`` (``NetFamily``); a team's family is
recorded in the model's net.json as its target and params, and rebuilt from them.
Importing this module loads nothing but torch's module types (and pydantic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from keel.errors import ConfigError
from keel.model.features import Preprocessor

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    from torch import nn

    from keel.config.settings import FeatureConfig, TrainConfig
    from keel.model.net import Net


class FamilyParams(BaseModel):
    """A family's ``[model] params``; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Family:
    """A family of networks (see the module docstring). Subclass it, give it a ``name``, a
    ``Params`` model when it takes settings, and a ``network``; override the preprocessing
    when the table's default does not fit."""

    name: ClassVar[str]
    Params: ClassVar[type[FamilyParams]] = FamilyParams
    pretrained: ClassVar[bool] = False  # training starts from a checkpoint's weights
    onnx_inputs: ClassVar[tuple[str, str]] = ("categories", "numerics")
    explanation_method: ClassVar[str | None] = "permutation"  # keel.model.explain.METHODS
    chunk_rows: ClassVar[int] = 0  # rows per forward pass when predicting (0: all at once)
    requirements: ClassVar[tuple[str, ...]] = ()  # distributions its code needs where the model is served

    def __init__(self, params: FamilyParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    # ---------------------------------------------------------------- settings
    def check(self, features: FeatureConfig) -> None:
        """Raise ConfigError, naming the key, when the features cannot feed this family (at
        start-up, before any run opens)."""
        if features.text:
            raise ConfigError(
                f"features.text {features.text}: net family {self.name!r} reads no text column "
                "(a text column is read by the 'bert' family)"
            )

    # ---------------------------------------------------------------- preprocessing
    def fit_preprocessor(self, frame: pd.DataFrame, features: FeatureConfig) -> Any:
        """The preprocessing fitted on the train split; it travels inside the model as JSON."""
        return Preprocessor.fit(frame, features.categorical, features.numeric)

    def load_preprocessor(self, data: dict[str, Any]) -> Any:
        """The preprocessing as the model saved it (preprocessor.json)."""
        return Preprocessor.from_dict(data)

    # ---------------------------------------------------------------- network
    def network(self, outputs: int, preprocessor: Any) -> nn.Module:
        """The network for ``outputs`` raw outputs over what ``preprocessor`` gives."""
        raise NotImplementedError(f"net family {self.name!r} defines no network(outputs, preprocessor)")

    def build(
        self, outputs: int, preprocessor: Any, train: TrainConfig | None = None, pretrained: bool = False
    ) -> Net:
        """The network to train (``pretrained``: from the family's checkpoint)."""
        return self.network(outputs, preprocessor)

    def describe(self, net: Net, outputs: int) -> dict[str, Any]:
        """What the model's net.json records to rebuild ``net`` at load: the family's target
        and params, and the output width."""
        cls = type(self)
        params = self.params.model_dump(mode="json")
        target = f"{cls.__module__}:{cls.__qualname__}"
        return {"arch": self.name, "family": {"target": target, "params": params}, "outputs": outputs}

    def rebuild(self, meta: dict[str, Any], preprocessor: Any) -> Net:
        """The network as ``describe`` recorded it (its weights are loaded after)."""
        return self.network(int(meta["outputs"]), preprocessor)

    # ---------------------------------------------------------------- explanations, ONNX
    def explanation(self, net: Net) -> str | None:
        """The explanation method for ``net`` (None: nothing to explain per record)."""
        return self.explanation_method

    def onnx_axes(self, net: Net) -> dict[str, dict[int, str]]:
        """The ONNX graph's dynamic axes, by input name and ``raw`` (the output)."""
        return {**{n: {0: "rows"} for n in self.onnx_inputs}, "raw": {0: "rows"}}

    # ---------------------------------------------------------------- adapters (LoRA)
    adapter_root: ClassVar[str] = ""  # the net's attribute an adapter attaches to ("": none)

    def check_adapter(self, method: str, targets: list[str]) -> None:
        """Raise ConfigError, naming the key, when ``[train] adapter = method`` with
        ``[train.lora] target_modules = targets`` cannot attach to this family's net."""
        if not self.adapter_root:
            raise ConfigError(
                f"train.adapter {method!r}: net family {self.name!r} takes no adapter "
                "(it has no pre-trained module to adapt; the 'bert' family does)"
            )
        known = self.adapter_modules()
        if known is None:  # known once the net is built (keel.model.runtime.adapters.attach)
            return
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise ConfigError(
                f"train.lora.target_modules: {unknown} not among the linear layers of net family "
                f"{self.name!r}'s {self.adapter_root!r} ({', '.join(sorted(known))})"
            )

    def adapter_modules(self) -> set[str] | None:
        """The last parts of the names of the linear layers under ``adapter_root`` (None:
        known only once the net is built)."""
        return None

    def base_checkpoint(self, net: Net) -> Path:
        """The file ``net``'s pre-trained weights were loaded from (an adapter's base)."""
        raise NotImplementedError(f"net family {self.name!r} names no base checkpoint")

    def load_base(self, net: Net, path: Path) -> None:
        """Load the pre-trained weights of ``path`` into ``net`` (an adapter's base)."""
        raise NotImplementedError(f"net family {self.name!r} loads no base checkpoint")

    # ---------------------------------------------------------------- structured pruning
    prunable: ClassVar[bool] = False  # prune() removes whole units (keel compress --method prune)

    def prune(self, net: Net, sparsity: float) -> Net:
        """A smaller network of the same family: the ``sparsity`` share of its prunable units
        (neurons, channels, heads) removed, least important first; what is kept keeps its
        weights. ``describe`` of the result records the smaller shape."""
        raise ConfigError(
            f"net family {self.name!r} has no structured pruning (keel compress --method prune)"
        )


def kept(width: int, sparsity: float) -> int:
    """Units a layer of ``width`` keeps at ``sparsity`` (at least one)."""
    return max(1, round(width * (1.0 - sparsity)))


def most_important(scores: Any, sparsity: float) -> Any:
    """The indices (ascending) of the ``kept(len(scores), sparsity)`` highest ``scores`` (a tensor)."""
    import torch

    return torch.topk(scores, kept(len(scores), sparsity)).indices.sort().values


class NetFamily(Family):
    """keel's own families: the net is built from, and rebuilt from, a ``NetConfig`` (the
    preprocessing's widths, ``[train]`` hidden/dropout/emb_dim_max, the family's params),
    which the model's net.json records as it always did."""

    net: ClassVar[type[nn.Module]]
    explanation_method = "ablation"

    def network(self, outputs: int, preprocessor: Any) -> nn.Module:
        raise TypeError(f"keel's {self.name!r} family builds its net from a NetConfig: use build()")

    def net_config(self, outputs: int, preprocessor: Any, train: TrainConfig) -> Any:
        from keel.model.net import NetConfig

        return NetConfig(
            preprocessor.cardinalities,
            preprocessor.numeric_width,
            list(train.hidden),
            train.dropout,
            train.emb_dim_max,
            outputs,
            arch=self.name,
            **self.params.model_dump(),
        )

    def build(
        self, outputs: int, preprocessor: Any, train: TrainConfig | None = None, pretrained: bool = False
    ) -> Net:
        if train is None:
            raise TypeError(f"keel's {self.name!r} family needs [train] to size its net")
        cfg = self.net_config(outputs, preprocessor, train)
        net: Any = self.net
        return net(cfg, pretrained=True) if pretrained else net(cfg)

    def describe(self, net: Net, outputs: int) -> dict[str, Any]:
        cfg: Any = getattr(net, "cfg")  # noqa: B009 (keel's nets keep their NetConfig)
        return dict(cfg.to_dict())

    def rebuild(self, meta: dict[str, Any], preprocessor: Any) -> Net:
        from keel.model.net import NetConfig

        fields = {k: v for k, v in meta.items() if k in NetConfig.__dataclass_fields__}
        return self.net(NetConfig(**fields))
