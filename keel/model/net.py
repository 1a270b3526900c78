"""keel's networks as plain torch modules (serving needs torch, not Lightning): the
tabular MLP and a small conv net for image workloads, which take the Preprocessor's
(category codes, numerics), and a BERT encoder for text (keel.text, imported only
when built), which takes (token ids, attention mask). ``build`` picks one by
``NetConfig.arch``."""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class NetConfig:
    cardinalities: list[int]
    numeric_width: int
    hidden: list[int]
    dropout: float
    emb_dim_max: int
    outputs: int = 1  # the objective's width; configs saved before objectives had 1
    arch: str = "mlp"  # "mlp" (TabularNet) or "conv" (ConvNet); saved before: mlp
    image: list[int] = field(default_factory=list)  # conv: [channels, height, width] of the pixels
    channels: list[int] = field(default_factory=list)  # conv: output channels per conv layer
    encoder: dict[str, Any] = field(default_factory=dict)  # bert: keel.text.encoder_options

    def to_dict(self) -> dict:
        return asdict(self)


def embedding_dim(cardinality: int, cap: int) -> int:
    return max(1, min(cap, (cardinality + 1) // 2))


def embeddings(cfg: NetConfig) -> nn.ModuleList:
    """One embedding per categorical feature (code 0: unknown)."""
    return nn.ModuleList(
        nn.Embedding(card, embedding_dim(card, cfg.emb_dim_max)) for card in cfg.cardinalities
    )


def dense(width: int, cfg: NetConfig) -> nn.Sequential:
    """``width`` inputs -> the ``hidden`` layers (ReLU, dropout) -> ``outputs``."""
    layers: list[nn.Module] = []
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
        width = hidden
    layers.append(nn.Linear(width, cfg.outputs))
    return nn.Sequential(*layers)


def _embedded_width(module: nn.ModuleList) -> int:
    return sum(e.embedding_dim for e in module if isinstance(e, nn.Embedding))


class TabularNet(nn.Module):
    """Categorical embeddings + scaled numerics -> MLP -> ``outputs`` raw values (one
    logit or value: shape (N,); several: (N, outputs))."""

    chunk_rows: ClassVar[int] = 0  # rows per forward when predicting; 0: all at once

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = embeddings(cfg)
        self.mlp = dense(_embedded_width(self.embeddings) + cfg.numeric_width, cfg)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        parts = [emb(cat[:, i]) for i, emb in enumerate(self.embeddings)]
        parts.append(num)
        out = self.mlp(torch.cat(parts, dim=1))
        return out.squeeze(1) if self.cfg.outputs == 1 else out


class ConvNet(nn.Module):
    """An image workload's net: its numeric features are the pixels of one
    ``image = [C, H, W]`` image, in order. The Preprocessor gives each pixel scaled
    plus a missing flag, so the input is 2C channels (values, then flags). Each conv
    layer is 3x3 conv -> BatchNorm -> ReLU, with a 2x2 max-pool after every second one;
    then the dense ``hidden`` head (with any categorical embeddings) -> ``outputs``."""

    chunk_rows: ClassVar[int] = 0

    def __init__(self, cfg: NetConfig):
        super().__init__()
        if len(cfg.image) != 3 or not cfg.channels:
            raise ValueError(f"ConvNet needs image=[C, H, W] and channels, got {cfg.image} / {cfg.channels}")
        c, h, w = cfg.image
        if cfg.numeric_width != 2 * c * h * w:
            raise ValueError(f"ConvNet: {cfg.numeric_width // 2} numeric columns for a {c}x{h}x{w} image")
        self.cfg = cfg
        convs: list[nn.Module] = []
        width = 2 * c
        for i, out in enumerate(cfg.channels):
            convs += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            if i % 2 == 1 and min(h, w) >= 2:
                convs.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            width = out
        self.convs = nn.Sequential(*convs)
        self.embeddings = embeddings(cfg)
        self.head = dense(width * h * w + _embedded_width(self.embeddings), cfg)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        c, h, w = self.cfg.image
        pixels = math.prod(self.cfg.image)
        values = num[:, :pixels].reshape(-1, c, h, w)
        flags = num[:, pixels:].reshape(-1, c, h, w)
        x = self.convs(torch.cat([values, flags], dim=1)).flatten(1)
        parts = [x, *(emb(cat[:, i]) for i, emb in enumerate(self.embeddings))]
        out = self.head(torch.cat(parts, dim=1))
        return out.squeeze(1) if self.cfg.outputs == 1 else out


Net = nn.Module  # TabularNet, ConvNet or keel.text.BertNet: forward(a, b) -> raw outputs
ARCHS: dict[str, str] = {
    "mlp": "keel.model.net:TabularNet",
    "conv": "keel.model.net:ConvNet",
    "bert": "keel.model.families.bert:BertNet",
}


def arch_class(arch: str) -> type[nn.Module]:
    """The class of the network ``arch`` names (keel.text's is imported only here)."""
    if arch not in ARCHS:
        raise ValueError(f"net arch {arch!r}: known {sorted(ARCHS)}")
    module, _, name = ARCHS[arch].partition(":")
    return getattr(importlib.import_module(module), name)


def build(cfg: NetConfig, pretrained: bool = False) -> Net:
    """The network ``cfg.arch`` names. ``pretrained``: start from the encoder
    checkpoint's weights (bert; training only, the registered model loads its own)."""
    cls: Any = arch_class(cfg.arch)
    return cls(cfg, pretrained=True) if pretrained else cls(cfg)


@torch.no_grad()
def forward_rows(net: Net, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The net's raw outputs for all rows, ``chunk_rows`` at a time when it sets one."""
    chunk = getattr(net, "chunk_rows", 0)
    if not chunk or len(a) <= chunk:
        return net(a, b)
    return torch.cat([net(a[i : i + chunk], b[i : i + chunk]) for i in range(0, len(a), chunk)])
