"""The ``mlp`` family: a table's categorical embeddings and scaled numerics -> an MLP. The
default network of every table workload. Explained by permutation importance over the raw
columns (global) and feature ablation (per record); exported to ONNX with the table's two
inputs; pruned by hidden neurons (structured: each hidden layer keeps its most important
neurons, scored by the L1 norms of their incoming and outgoing weights)."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import torch
from torch import nn

from keel.model.families.base import NetFamily, most_important
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


def neuron_importance(into: nn.Linear, out_of: nn.Linear) -> torch.Tensor:
    """Per hidden neuron: the L1 norm of its incoming weights times that of its outgoing ones
    (a neuron that reads or writes nothing scores 0)."""
    return into.weight.abs().sum(1) * out_of.weight.abs().sum(0)


class MLP(NetFamily):
    name = "mlp"
    net = TabularNet
    explanation_method = "ablation"
    prunable = True

    @torch.no_grad()
    def prune(self, net, sparsity: float) -> TabularNet:
        linears = [m for m in net.mlp if isinstance(m, nn.Linear)]
        keep = [
            most_important(neuron_importance(linears[i], linears[i + 1]), sparsity)
            for i in range(len(net.cfg.hidden))
        ]
        pruned = TabularNet(replace(net.cfg, hidden=[len(k) for k in keep]))
        pruned.embeddings.load_state_dict(net.embeddings.state_dict())
        rows: torch.Tensor | None = None  # the previous layer's kept neurons: this layer's inputs
        for i, (old, new) in enumerate(
            zip(linears, [m for m in pruned.mlp if isinstance(m, nn.Linear)], strict=True)
        ):
            weight, bias = old.weight.detach(), old.bias.detach()
            if i < len(keep):
                weight, bias = weight[keep[i]], bias[keep[i]]
            if rows is not None:
                weight = weight[:, rows]
            new.weight.copy_(weight)
            new.bias.copy_(bias)
            rows = keep[i] if i < len(keep) else None
        return pruned.eval()
