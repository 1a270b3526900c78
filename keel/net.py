"""The tabular MLP as a plain torch module (serving needs torch, not Lightning)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NetConfig:
    cardinalities: list[int]
    numeric_width: int
    hidden: list[int]
    dropout: float
    emb_dim_max: int

    def to_dict(self) -> dict:
        return asdict(self)


def embedding_dim(cardinality: int, cap: int) -> int:
    return max(1, min(cap, (cardinality + 1) // 2))


class TabularNet(nn.Module):
    """Categorical embeddings + scaled numerics -> MLP -> one logit."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        embeddings = [nn.Embedding(card, embedding_dim(card, cfg.emb_dim_max)) for card in cfg.cardinalities]
        self.embeddings = nn.ModuleList(embeddings)
        width = sum(e.embedding_dim for e in embeddings) + cfg.numeric_width
        layers: list[nn.Module] = []
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        parts = [emb(cat[:, i]) for i, emb in enumerate(self.embeddings)]
        parts.append(num)
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)
