"""The ``conv`` family: a small conv net over an image workload's pixels (its numeric columns,
in order, are one ``image = [C, H, W]``). Explained by gradient saliency per pixel (permuting
64 correlated pixels one at a time says little); exported to ONNX with the table's two inputs;
pruned by channels (structured: each conv layer keeps its most important output channels,
scored by the L1 norm of their filter times their BatchNorm scale times the L1 norm of what
reads them; the dense head keeps its neurons)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from keel.errors import ConfigError
from keel.model.families.base import FamilyParams, NetFamily, most_important
from keel.model.net import NetConfig, dense, embedded_width, embeddings


class ConvNet(nn.Module):
    """The Preprocessor gives each pixel scaled plus a missing flag, so the input is 2C
    channels (values, then flags). Each conv layer is 3x3 conv -> BatchNorm -> ReLU, with a
    2x2 max-pool after every second one; then the dense ``hidden`` head (with any categorical
    embeddings) -> ``outputs``."""

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
        self.pixels_out = h * w  # per channel, after the last pooling: the head reads channel-major
        self.embeddings = embeddings(cfg)
        self.head = dense(width * h * w + embedded_width(self.embeddings), cfg)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        c, h, w = self.cfg.image
        pixels = math.prod(self.cfg.image)
        values = num[:, :pixels].reshape(-1, c, h, w)
        flags = num[:, pixels:].reshape(-1, c, h, w)
        x = self.convs(torch.cat([values, flags], dim=1)).flatten(1)
        parts = [x, *(emb(cat[:, i]) for i, emb in enumerate(self.embeddings))]
        out = self.head(torch.cat(parts, dim=1))
        return out.squeeze(1) if self.cfg.outputs == 1 else out


def _reads(net: ConvNet, i: int) -> torch.Tensor:
    """Per output channel of conv layer ``i``: the L1 norm of the weights that read it (the
    next conv's input slices, or for the last layer the head's columns of its pixels)."""
    convs = [m for m in net.convs if isinstance(m, nn.Conv2d)]
    if i + 1 < len(convs):
        return convs[i + 1].weight.abs().sum((0, 2, 3))
    first = next(m for m in net.head if isinstance(m, nn.Linear))
    width = convs[i].out_channels
    columns = first.weight[:, : width * net.pixels_out].abs()
    return columns.reshape(first.out_features, width, -1).sum((0, 2))


def channel_importance(net: ConvNet, i: int) -> torch.Tensor:
    """Per output channel of conv layer ``i``: L1 of its filter x |its BatchNorm scale| x L1
    of what reads it (a channel that is silenced or never read scores 0)."""
    convs = [m for m in net.convs if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.convs if isinstance(m, nn.BatchNorm2d)]
    return convs[i].weight.abs().sum((1, 2, 3)) * norms[i].weight.abs() * _reads(net, i)


class ConvParams(FamilyParams):
    image: list[int] = Field(default_factory=list)  # [C, H, W]: the numeric columns, in order, are its pixels
    channels: list[int] = Field(default_factory=list)  # output channels per conv layer


class Conv(NetFamily):
    name = "conv"
    net = ConvNet
    Params = ConvParams
    explanation_method = "saliency"
    params: ConvParams

    def check(self, features: Any) -> None:
        super().check(features)
        image, channels = list(self.params.image), list(self.params.channels)
        if len(image) != 3 or not channels:
            raise ConfigError(
                f"net family 'conv' needs image = [C, H, W] and channels in its params "
                f"(got image={image}, channels={channels})"
            )
        if len(features.numeric) != math.prod(image):
            raise ConfigError(
                f"net family 'conv': features.numeric has {len(features.numeric)} columns for a "
                f"{'x'.join(map(str, image))} image ({math.prod(image)} pixels)"
            )

    prunable = True

    @torch.no_grad()
    def prune(self, net, sparsity: float) -> ConvNet:
        keep = [most_important(channel_importance(net, i), sparsity) for i in range(len(net.cfg.channels))]
        pruned = ConvNet(replace(net.cfg, channels=[len(k) for k in keep]))
        pruned.embeddings.load_state_dict(net.embeddings.state_dict())
        old_layers = [m for m in net.convs if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        new_layers = [m for m in pruned.convs if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        inputs = torch.arange(2 * net.cfg.image[0])  # the first layer reads every input channel
        for i, rows in enumerate(keep):
            conv, norm = old_layers[2 * i].state_dict(), old_layers[2 * i + 1].state_dict()
            new_layers[2 * i].load_state_dict(
                {"weight": conv["weight"][rows][:, inputs], "bias": conv["bias"][rows]}
            )
            # scale, shift and running statistics per kept channel (num_batches_tracked as it is)
            new_layers[2 * i + 1].load_state_dict({k: v[rows] if v.ndim else v for k, v in norm.items()})
            inputs = rows
        pixels = net.pixels_out
        columns = (inputs[:, None] * pixels + torch.arange(pixels)).flatten()  # channel-major flatten
        tail = torch.arange(net.cfg.channels[-1] * pixels, next(iter(net.head)).in_features)  # embeddings
        head = dict(net.head.state_dict())  # the dense head as it is, but its first layer's kept columns
        head["0.weight"] = head["0.weight"][:, torch.cat([columns, tail])]
        pruned.head.load_state_dict(head)
        return pruned.eval()
