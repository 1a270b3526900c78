"""The team's network family: a residual CNN (a LightningModule with its own training step:
label-smoothed cross-entropy and SGD with momentum), registered with keel through
keel.model.families.Family."""

from __future__ import annotations

from typing import ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from keel.model.families import Family, FamilyParams
from resnet_digits.preprocessing import CentredPixels

SIDE = 8


class ResNetParams(FamilyParams):
    width: int = Field(default=16, ge=4)  # channels of every block
    blocks: int = Field(default=2, ge=1)
    lr: float = Field(default=0.05, gt=0)
    label_smoothing: float = Field(default=0.05, ge=0, lt=1)


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


class ResNet(pl.LightningModule):
    """forward(codes, pixels) -> one logit per class."""

    def __init__(self, outputs: int, params: ResNetParams):
        super().__init__()
        self.params = params
        self.stem = nn.Sequential(
            nn.Conv2d(1, params.width, 3, padding=1, bias=False), nn.BatchNorm2d(params.width)
        )
        self.blocks = nn.Sequential(*(Block(params.width) for _ in range(params.blocks)))
        self.head = nn.Linear(params.width, outputs)

    def forward(self, codes: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(pixels.reshape(-1, 1, SIDE, SIDE)))
        x = self.blocks(x).mean(dim=(2, 3))  # global average pool
        return self.head(x)

    def _loss(self, batch) -> torch.Tensor:
        codes, pixels, y = batch
        return F.cross_entropy(self(codes, pixels), y.long(), label_smoothing=self.params.label_smoothing)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[2]))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch), on_epoch=True, batch_size=len(batch[2]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.params.lr, momentum=0.9, weight_decay=1e-4)


class ResNetFamily(Family):
    name = "resnet"
    Params = ResNetParams
    params: ResNetParams
    requirements: ClassVar[tuple[str, ...]] = ("lightning",)  # its module imports Lightning
    explanation_method = "permutation"  # keel's model-agnostic one

    def fit_preprocessor(self, frame, features):
        return CentredPixels.fit(frame, features.numeric)

    def load_preprocessor(self, data):
        return CentredPixels.from_dict(data)

    def network(self, outputs: int, preprocessor) -> ResNet:
        return ResNet(outputs, self.params)
