"""A compressed variant's network: an ONNX graph run by onnxruntime, fed the inputs its family
names (keel.model.families), ``chunk_rows`` rows per call when the family sets one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from keel.model.families import Family


class OnnxRunner:
    """(a, b) arrays -> raw outputs as a torch tensor."""

    def __init__(self, path: Path, family: Family):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = family.onnx_inputs
        self.wanted = {i.name for i in self.session.get_inputs()}  # unused inputs are pruned
        self.chunk = family.chunk_rows

    def _run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        feed = {n: x for n, x in zip(self.names, (a, b), strict=True) if n in self.wanted}
        return self.session.run(["raw"], feed)[0]

    def raw(self, a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        if not self.chunk or len(a) <= self.chunk:
            return torch.from_numpy(self._run(a, b))
        parts = [
            self._run(a[i : i + self.chunk], b[i : i + self.chunk]) for i in range(0, len(a), self.chunk)
        ]
        return torch.from_numpy(np.concatenate(parts))
