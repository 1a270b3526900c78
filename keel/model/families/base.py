"""What a network family declares, in one place: its network class, how its preprocessing is
fitted on the train split, saved (JSON) and rebuilt at load, whether training starts from
pre-trained weights, its explanation method and its ONNX signature. keel.model.families lists
the families; nothing outside a family's own file branches on its name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from keel.errors import ConfigError
from keel.model.features import Preprocessor

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from keel.config.settings import FeatureConfig
    from keel.model.net import Net, NetConfig


class Family:
    """A family of keel networks; the defaults are those of a network over a table's encoded
    columns (category codes, scaled numerics + missing flags)."""

    name: ClassVar[str]
    net: ClassVar[type[nn.Module]]
    pretrained: ClassVar[bool] = False  # training starts from a checkpoint's weights
    onnx_inputs: ClassVar[tuple[str, str]] = ("categories", "numerics")
    explanation_method: ClassVar[str | None] = "ablation"  # keel.model.explain.METHODS

    # ---------------------------------------------------------------- settings
    def check(self, features: FeatureConfig, options: dict[str, Any]) -> None:
        """Raise ConfigError, naming the key, when the features cannot feed this family (at
        start-up, before any run opens)."""
        if features.text:
            raise ConfigError(
                f"features.text {features.text}: net family {self.name!r} reads no text column "
                "(a text column is read by the 'bert' family)"
            )

    # ---------------------------------------------------------------- preprocessing
    def fit_preprocessor(self, frame: pd.DataFrame, features: FeatureConfig, options: dict[str, Any]) -> Any:
        """The preprocessing fitted on the train split; it travels inside the model as JSON."""
        return Preprocessor.fit(frame, features.categorical, features.numeric)

    def load_preprocessor(self, data: dict[str, Any]) -> Any:
        """The preprocessing as the model saved it (preprocessor.json)."""
        return Preprocessor.from_dict(data)

    # ---------------------------------------------------------------- network
    def build(self, cfg: NetConfig, pretrained: bool = False) -> Net:
        """The network; ``pretrained``: from the checkpoint's weights (training only)."""
        return self.net(cfg, pretrained=True) if pretrained else self.net(cfg)

    def explanation(self, net: Net) -> str | None:
        """The explanation method for ``net`` (None: nothing to explain per record)."""
        return self.explanation_method

    def onnx_axes(self, net: Net) -> dict[str, dict[int, str]]:
        """The ONNX graph's dynamic axes, by input name and ``raw`` (the output)."""
        return {**{n: {0: "rows"} for n in self.onnx_inputs}, "raw": {0: "rows"}}

    @property
    def chunk_rows(self) -> int:
        """Rows per forward pass when predicting (0: all at once)."""
        return int(getattr(self.net, "chunk_rows", 0))
