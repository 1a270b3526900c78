"""The ``conv`` family: a small conv net over an image workload's pixels (its numeric columns,
in order, are one ``image = [C, H, W]``). Explained by gradient saliency per pixel (permuting
64 correlated pixels one at a time says little); exported to ONNX with the table's two inputs."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from keel.errors import ConfigError
from keel.model.families.base import FamilyParams, NetFamily
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
