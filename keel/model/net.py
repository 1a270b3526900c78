"""What every keel network shares: its config (``NetConfig``, saved as the model's net.json),
the layers the families build from (embeddings, the dense head) and the chunked forward pass
of a prediction. Plain torch (serving needs torch, not Lightning). The networks themselves
are the families' (keel.model.families: one file each). Never: reads settings or files."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
    arch: str = "mlp"  # the family (keel.model.families); saved before families: mlp
    image: list[int] = field(default_factory=list)  # conv: [channels, height, width] of the pixels
    channels: list[int] = field(default_factory=list)  # conv: output channels per conv layer
    encoder: dict[str, Any] = field(default_factory=dict)  # bert: keel.model.families.bert.encoder_options

    def to_dict(self) -> dict:
        return asdict(self)


Net = nn.Module  # a family's network: forward(a, b) -> raw outputs


def embedding_dim(cardinality: int, cap: int) -> int:
    return max(1, min(cap, (cardinality + 1) // 2))


def embeddings(cfg: NetConfig) -> nn.ModuleList:
    """One embedding per categorical feature (code 0: unknown)."""
    return nn.ModuleList(
        nn.Embedding(card, embedding_dim(card, cfg.emb_dim_max)) for card in cfg.cardinalities
    )


def embedded_width(module: nn.ModuleList) -> int:
    return sum(e.embedding_dim for e in module if isinstance(e, nn.Embedding))


def dense(width: int, cfg: NetConfig) -> nn.Sequential:
    """``width`` inputs -> the ``hidden`` layers (ReLU, dropout) -> ``outputs``."""
    layers: list[nn.Module] = []
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
        width = hidden
    layers.append(nn.Linear(width, cfg.outputs))
    return nn.Sequential(*layers)


@torch.no_grad()
def forward_rows(net: Net, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The net's raw outputs for all rows, ``chunk_rows`` at a time when it sets one."""
    chunk = getattr(net, "chunk_rows", 0)
    if not chunk or len(a) <= chunk:
        return net(a, b)
    return torch.cat([net(a[i : i + chunk], b[i : i + chunk]) for i in range(0, len(a), chunk)])
