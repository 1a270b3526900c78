"""The ``mlp`` family: a table's categorical embeddings and scaled numerics -> an MLP. The
default network of every table workload. Explained by permutation importance over the raw
columns (global) and feature ablation (per record); exported to ONNX with the table's two
inputs."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from keel.model.families.base import NetFamily
from keel.model.net import NetConfig, dense, embedded_width, embeddings


class TabularNet(nn.Module):
    """Categorical embeddings + scaled numerics -> MLP -> ``outputs`` raw values (one
    logit or value: shape (N,); several: (N, outputs))."""

    chunk_rows: ClassVar[int] = 0  # rows per forward when predicting; 0: all at once

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = embeddings(cfg)
        self.mlp = dense(embedded_width(self.embeddings) + cfg.numeric_width, cfg)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        parts = [emb(cat[:, i]) for i, emb in enumerate(self.embeddings)]
        parts.append(num)
        out = self.mlp(torch.cat(parts, dim=1))
        return out.squeeze(1) if self.cfg.outputs == 1 else out


class MLP(NetFamily):
    name = "mlp"
    net = TabularNet
    explanation_method = "ablation"
