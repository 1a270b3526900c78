"""The team's preprocessing: pixel intensities scaled to 0..1 and centred on the training
images' mean image. Fitted on the train split; saved and rebuilt as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class CentredPixels:
    pixels: list[str]  # the raw feature columns, in image order
    mean: list[float]  # the training images' mean, per pixel, after scaling
    scale: float = 16.0  # the digits' top intensity

    @classmethod
    def fit(cls, frame: pd.DataFrame, pixels: list[str]) -> CentredPixels:
        x = frame[pixels].to_numpy(dtype=np.float64) / 16.0
        return cls(list(pixels), x.mean(axis=0).tolist())

    @property
    def columns(self) -> list[str]:
        return list(self.pixels)

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(no categorical codes, the centred pixels): keel's two inputs."""
        x = frame[self.pixels].to_numpy(dtype=np.float64, na_value=0.0) / self.scale
        centred = (x - np.asarray(self.mean)).astype(np.float32)
        return np.zeros((len(frame), 0), dtype=np.int64), centred

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CentredPixels:
        return cls(**data)
