"""The registered model: an MLflow pyfunc that predicts from raw feature rows.

Preprocessing (vocabularies and scaling, or a text model's tokenizer) is part of the model,
stored as JSON next to the weights, so ``mlflow.pyfunc.load_model("models:/<name>@champion")``
needs only raw rows. The network is rebuilt by its family (net.json's ``arch``, or a team's
``family`` target, whose code travels in the model's code too), its weights read with
``torch.load(weights_only=True)``: loading never unpickles a Python object. A version
trained with a LoRA adapter stores the adapter and its base's reference instead of
weights.pt; it loads merged (keel.model.runtime.adapters).
Imports only keel.model's core (families, features, objectives, net): this package and what
it imports are the code every registered model carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from keel.model import families
from keel.model.families import Family
from keel.model.net import Net, forward_rows
from keel.model.objectives import Objective, from_dict
from keel.model.runtime import adapters

# Every model registered before objectives existed was this one: net.json without an
# "objective" entry means a binary classifier answering probability + delayed.
LEGACY_OBJECTIVE = {"kind": "binary", "label": "delayed", "classes": [0, 1]}


def write_meta(
    family: Family,
    preprocessor: Any,
    net: Net,
    threshold: float,
    directory: Path,
    objective: Objective,
    **extra: Any,
) -> dict[str, str]:
    """preprocessor.json and net.json (the family's record of the net, threshold, objective,
    ``extra``; a net with an adapter: its record, keel.model.runtime.adapters)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "preprocessor.json").write_text(json.dumps(preprocessor.to_dict()))
    meta = {
        **family.describe(net, objective.width),
        "threshold": threshold,
        "objective": objective.to_dict(),
        **extra,
    }
    adapter = adapters.adapter_of(net)
    if adapter is not None:
        meta["adapter"] = adapter.to_dict()
    (directory / "net.json").write_text(json.dumps(meta))
    return {"preprocessor": str(directory / "preprocessor.json"), "net": str(directory / "net.json")}


def save_artifacts(
    family: Family,
    preprocessor: Any,
    net: Net,
    threshold: float,
    directory: Path,
    objective: Objective,
    **extra: Any,
) -> dict[str, str]:
    """The registered model's artifacts: write_meta's two files (``extra`` in net.json) and
    weights.pt; a net with an adapter: the adapter and the head instead of weights.pt."""
    artifacts = write_meta(family, preprocessor, net, threshold, directory, objective, **extra)
    if adapters.adapter_of(net) is not None:
        return {**artifacts, **adapters.save(net, directory)}
    torch.save(net.state_dict(), directory / "weights.pt")
    return {**artifacts, "weights": str(directory / "weights.pt")}


def read_meta(artifacts: Mapping[str, str]) -> tuple[Family, Any, dict[str, Any], float, Objective]:
    """(family, preprocessor, the net's record, threshold, objective) from a model's artifacts."""
    meta = json.loads(Path(artifacts["net"]).read_text())
    threshold = float(meta.pop("threshold"))
    objective = from_dict(meta.pop("objective", LEGACY_OBJECTIVE))
    family = families.from_meta(meta)
    preprocessor = family.load_preprocessor(json.loads(Path(artifacts["preprocessor"]).read_text()))
    return family, preprocessor, meta, threshold, objective


def load_parts(artifacts: Mapping[str, str]) -> tuple[Family, Any, Net, float, Objective]:
    """(family, preprocessor, net with its weights, threshold, objective) from a model's artifacts."""
    family, preprocessor, meta, threshold, objective = read_meta(artifacts)
    if "adapter" in meta:  # its base resolved and checked, the adapter merged into it
        net = adapters.load(family, meta, preprocessor, artifacts)
    else:
        net = family.rebuild(meta, preprocessor)
        net.load_state_dict(torch.load(artifacts["weights"], weights_only=True))
    net.eval()
    return family, preprocessor, net, threshold, objective


class TabularModel(PythonModel):
    """Raw rows -> the objective's prediction table (binary: ``probability`` and the
    label; multiclass: ``p_<class>`` per class and the label; regression: ``prediction``)."""

    def load_context(self, context) -> None:
        parts = load_parts(context.artifacts)
        self.family, self.preprocessor, self.net, self.threshold, self.objective = parts

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        cat, num = self.preprocessor.transform(model_input)
        raw = forward_rows(self.net, torch.from_numpy(cat), torch.from_numpy(num))
        return self.objective.predict(raw, self.threshold, inputs=(cat, num))


FlightDelayModel = TabularModel  # the name models registered before workloads load by


class OnnxModel(PythonModel):
    """A compressed variant (keel.model.compress): the same preprocessing and objective, the
    net as an ONNX graph run by onnxruntime (``model.onnx``; ``net.json`` keeps the
    source's threshold, objective and architecture)."""

    def load_context(self, context) -> None:
        from keel.model.runtime.onnx import OnnxRunner

        self.family, self.preprocessor, _, self.threshold, self.objective = read_meta(context.artifacts)
        self.runner = OnnxRunner(Path(context.artifacts["onnx"]), self.family)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        a, b = self.preprocessor.transform(model_input)
        return self.objective.predict(self.runner.raw(a, b), self.threshold, inputs=(a, b))
