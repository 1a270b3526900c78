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
    outputs: int = 1  # the objective's width; configs saved before objectives had 1

    def to_dict(self) -> dict:
        return asdict(self)


def embedding_dim(cardinality: int, cap: int) -> int:
    return max(1, min(cap, (cardinality + 1) // 2))


class TabularNet(nn.Module):
    """Categorical embeddings + scaled numerics -> MLP -> ``outputs`` raw values (one
    logit or value: shape (N,); several: (N, outputs))."""

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
        layers.append(nn.Linear(width, cfg.outputs))
        self.mlp = nn.Sequential(*layers)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        parts = [emb(cat[:, i]) for i, emb in enumerate(self.embeddings)]
        parts.append(num)
        out = self.mlp(torch.cat(parts, dim=1))
        return out.squeeze(1) if self.cfg.outputs == 1 else out
