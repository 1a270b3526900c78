"""Compression: a smaller or faster variant of a registered model, with the evidence
that it still answers like the original.

Methods (measured on the text workload's MiniLM, bench/compress.py): ``onnx-int8``
(the net exported to ONNX, its weights quantized to int8 with onnxruntime's dynamic
quantization; activations are quantized per call) and ``onnx`` (the ONNX export
alone, fp32); ``prune`` (structured pruning by the net's family, ``Family.prune``: whole
neurons removed at ``[compress] sparsity``; the variant is a smaller torch net of the same
family, served like any keel model) and ``prune-int8`` (pruned, then ONNX + int8).
torchao's int8 dynamic quantization ran 14x slower than fp32 eager on this CPU and
torch.ao.quantization is deprecated, so neither is offered.

Any keel net compresses to ONNX (MLP, conv, BERT); pruning needs a family that prunes
(``Family.prunable``: keel's MLP, conv and BERT; a team's own when it declares it). The
variant keeps the source's preprocessor, objective and threshold; only the net changes,
and (ONNX methods) it runs in onnxruntime (keel.model.runtime.pyfunc.OnnxModel). The net's
family names the graph's inputs and dynamic axes. Parity is measured on the source's own
held-out rows: metric deltas, label agreement and the largest output difference; size and
latency (p50/p99 at 1 and 32 rows) are measured in a fresh process (``python -m
keel.model.compress``). No MLflow, no settings here: tasks/compress.py has the edges.
Importing this module loads neither onnx, onnxruntime nor MLflow.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from keel.errors import KeelError
from keel.model.families import Family
from keel.model.net import Net
from keel.model.runtime.adapters import file_sha256, merged
from keel.model.runtime.onnx import OnnxRunner

if TYPE_CHECKING:
    from keel.model.families.bert import TextPreprocessor
    from keel.model.features import Preprocessor
    from keel.model.objectives import Objective

METHODS = ("onnx-int8", "onnx", "prune", "prune-int8")
PRUNING = ("prune", "prune-int8")  # structured pruning by the net's family; -int8: then ONNX + int8


class CompressError(KeelError):
    """A model keel cannot compress (its net does not export): the user's to fix, exit 1."""


OPSET = 17


class _Exported(nn.Module):
    """The net with a fixed two-input signature for the exporter."""

    def __init__(self, net: Net):
        super().__init__()
        self.net = net

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a, b)


def export_onnx(family: Family, net: Net, a: np.ndarray, b: np.ndarray, path: Path) -> Path:
    """The net as an ONNX graph, with its family's input names and dynamic axes (rows, and
    tokens for text). Uses torch's TorchScript exporter: deterministic bytes for the same
    weights, and no onnxscript dependency."""
    import warnings

    names = family.onnx_inputs
    axes = family.onnx_axes(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        try:
            torch.onnx.export(
                _Exported(net).eval(),
                (torch.from_numpy(a), torch.from_numpy(b)),
                str(path),
                input_names=list(names),
                output_names=["raw"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        except Exception as exc:  # a team's net that the exporter cannot trace
            raise CompressError(
                f"net family {family.name!r}: its network does not export to ONNX "
                f"({type(exc).__name__}: {str(exc)[:300]}); keel compress needs an ONNX graph"
            ) from exc
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """onnxruntime's dynamic quantization: int8 weights, activations quantized per call."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its pre-processing hint
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target


def build_variant(
    family: Family, net: Net, a: np.ndarray, b: np.ndarray, method: str, directory: Path
) -> Path:
    """``directory``/model.onnx for ``method`` (METHODS)."""
    if method not in METHODS:
        raise ValueError(f"compression method {method!r}: known {', '.join(METHODS)}")
    exported = export_onnx(family, net, a, b, directory / ("model.onnx" if method == "onnx" else "fp32.onnx"))
    if method == "onnx":
        return exported
    out = quantize_int8(exported, directory / "model.onnx")
    exported.unlink()
    return out


@dataclass
class CompressedModel:
    """A variant with the TrainedModel surface the evaluation tasks use (``predict``,
    ``objective``, ``preprocessor``). ``path`` lies in its pyfunc artifacts directory
    (``artifacts``: preprocessor.json, net.json, model.onnx), ready to log or time."""

    preprocessor: Preprocessor | TextPreprocessor
    objective: Objective
    threshold: float
    family: Family
    method: str
    path: Path  # model.onnx
    runner: OnnxRunner
    entry: str = "pyfunc_onnx_entry.py"
    runtime: tuple[str, ...] = ("onnxruntime",)
    params: dict[str, str] = field(default_factory=dict)  # the method's settings, logged as run params

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        a, b = self.preprocessor.transform(frame)
        return self.objective.predict(self.runner.raw(a, b), self.threshold, inputs=(a, b))

    @property
    def sha256(self) -> str:
        return file_sha256(self.path)

    @property
    def artifacts(self) -> dict[str, str]:
        """keel.model.runtime.pyfunc.OnnxModel's artifacts."""
        d = self.path.parent
        return {
            "preprocessor": str(d / "preprocessor.json"),
            "net": str(d / "net.json"),
            "onnx": str(self.path),
        }


@dataclass
class PrunedModel:
    """A pruned variant that stays a torch net of its family (``prune``): the surface of
    CompressedModel; its artifacts are a keel model's own (preprocessor.json, net.json with
    the smaller shape, weights.pt), loaded by keel.model.runtime.pyfunc.TabularModel."""

    preprocessor: Preprocessor | TextPreprocessor
    objective: Objective
    threshold: float
    family: Family
    method: str
    net: Net
    directory: Path
    params: dict[str, str]  # the method's settings, logged as run params and version tags
    entry: str = "pyfunc_entry.py"
    runtime: tuple[str, ...] = ()

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        from keel.model.net import forward_rows

        a, b = self.preprocessor.transform(frame)
        raw = forward_rows(self.net, torch.from_numpy(a), torch.from_numpy(b))
        return self.objective.predict(raw, self.threshold, inputs=(a, b))

    @property
    def path(self) -> Path:
        """The model file (weights.pt): what parity sizes and the version's checksum names."""
        return self.directory / "weights.pt"

    @property
    def sha256(self) -> str:
        return file_sha256(self.path)

    @property
    def artifacts(self) -> dict[str, str]:
        return {name: str(self.directory / f"{name}.json") for name in ("preprocessor", "net")} | {
            "weights": str(self.directory / "weights.pt")
        }


@dataclass(frozen=True)
class Recovery:
    """The short fine-tune a pruned net gets before it is saved (``[compress]
    recovery_epochs``): ``train(pruned, source)`` returns the pruned net trained on the source's
    own train split (keel.model.training.fine_tune, built by the caller, who has the data),
    towards the labels or, ``target = "distill"``, towards the source net's own outputs."""

    epochs: int
    train: Callable[[Net, Net], Net]
    target: str = "labels"


def compress(
    source: Any,
    method: str,
    sample: pd.DataFrame,
    directory: Path,
    sparsity: float = 0.5,
    recovery: Recovery | None = None,
) -> CompressedModel | PrunedModel:
    """A variant of ``source`` (a keel.model.training.TrainedModel, or the parts of a registered
    one: preprocessor, net, threshold, objective) built with ``method``: its pyfunc
    artifacts in ``directory``; ``sample``: a few raw rows to trace the net with;
    ``sparsity``: the share of units the pruning methods remove; ``recovery``: their
    fine-tune after pruning (none, or 0 epochs: the pruned weights as they are). A net
    trained with an adapter is compressed merged."""
    from keel.model.runtime.pyfunc import save_artifacts, write_meta

    family, net = source.family, merged(source.net)
    params: dict[str, str] = {}  # the method's settings (run params, version tags)
    extra = {"compression": method}  # into net.json
    if method in PRUNING:
        original, net = net, family.prune(net, sparsity)  # no pruning: ConfigError naming the family
        params, extra["sparsity"] = {"compress.sparsity": str(sparsity)}, str(sparsity)
        if recovery is not None and recovery.epochs:
            net = recovery.train(net, original)
            params["compress.recovery_epochs"] = extra["recovery_epochs"] = str(recovery.epochs)
            if recovery.target != "labels":  # recorded only when not the default: replay follows it
                params["compress.recovery"] = extra["recovery"] = recovery.target
    pre, threshold, objective = source.preprocessor, source.threshold, source.objective
    if method == "prune":
        save_artifacts(family, pre, net, threshold, directory, objective, **extra)
        return PrunedModel(
            source.preprocessor, source.objective, source.threshold, family, method, net, directory, params
        )
    write_meta(family, pre, net, threshold, directory, objective, **extra)
    a, b = source.preprocessor.transform(sample)
    path = build_variant(family, net, a, b, "onnx-int8" if method == "prune-int8" else method, directory)
    return CompressedModel(
        source.preprocessor,
        source.objective,
        source.threshold,
        family,
        method,
        path,
        OnnxRunner(path, family),
        params=params,
    )


def agreement(objective: Objective, source: pd.DataFrame, variant: pd.DataFrame) -> dict[str, float]:
    """How alike two prediction tables are: the share of rows with the same label
    (classifiers) and the largest absolute difference of any output column."""
    out: dict[str, float] = {}
    if objective.kind != "regression":
        out["agreement"] = float(
            (source[objective.label].to_numpy() == variant[objective.label].to_numpy()).mean()
        )
    numeric = [c for c in source.columns if c != objective.label or objective.kind == "regression"]
    diffs = [float(np.max(np.abs(source[c].to_numpy(float) - variant[c].to_numpy(float)))) for c in numeric]
    out["max_abs_diff"] = max(diffs) if diffs else 0.0
    return out


# ---------------------------------------------------------------- latency, in a fresh process
def _timings(predict, frame: pd.DataFrame, rounds: int) -> dict[str, float]:
    predict(frame)  # warm-up: lazy init, first-call allocation
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        predict(frame)
        seconds.append(time.perf_counter() - start)
    q = np.quantile(np.asarray(seconds) * 1000, [0.5, 0.99])
    return {"p50_ms": float(q[0]), "p99_ms": float(q[1])}


def _load(directory: Path) -> Any:
    """A keel pyfunc (TabularModel or OnnxModel) from its artifacts directory, as MLflow would."""
    from types import SimpleNamespace

    from keel.model.runtime.pyfunc import OnnxModel, TabularModel

    files = {name: str(directory / f"{name}.json") for name in ("preprocessor", "net")}
    model: Any
    if (directory / "model.onnx").is_file():
        files["onnx"] = str(directory / "model.onnx")
        model = OnnxModel()
    else:
        if (directory / "weights.pt").is_file():
            files["weights"] = str(directory / "weights.pt")
        else:  # a version trained with an adapter: merged into its base at load
            files |= {"adapter": str(directory / "adapter"), "head": str(directory / "head.safetensors")}
        model = TabularModel()
    model.load_context(SimpleNamespace(artifacts=files))
    return model


def measure_latency(
    directory: Path, rows: pd.DataFrame, sizes: tuple[int, ...], rounds: int
) -> dict[str, Any]:
    model = _load(directory)
    out: dict[str, Any] = {}
    for n in sizes:
        frame = rows.head(n).reset_index(drop=True)
        if len(frame) < n:  # fewer held-out rows than asked: repeat them
            frame = pd.concat([frame] * math.ceil(n / max(1, len(frame))), ignore_index=True).head(n)
        out[str(n)] = _timings(lambda f: model.predict(None, f), frame, rounds)
    return out


def latency_in_fresh_process(
    directories: dict[str, Path],
    rows: pd.DataFrame,
    work: Path,
    sizes: tuple[int, ...] = (1, 32),
    rounds: int = 30,
) -> dict[str, Any]:
    """p50/p99 per model and batch size, each model in its own new Python process (no
    warm caches, no shared torch/onnxruntime thread pools)."""
    work.mkdir(parents=True, exist_ok=True)
    rows_path = work / "rows.parquet"
    rows.to_parquet(rows_path, index=False)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = {}
    for name, directory in directories.items():
        args = [sys.executable, "-m", "keel.model.compress", str(directory), str(rows_path), str(rounds)]
        proc = subprocess.run(
            [*args, *map(str, sizes)], capture_output=True, text=True, env=env, timeout=900, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"latency of {name} in a fresh process failed:\n{proc.stderr[-2000:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str]) -> None:
    directory, rows_path, rounds, *sizes = argv
    rows = pd.read_parquet(rows_path)
    result = measure_latency(Path(directory), rows, tuple(int(s) for s in sizes), int(rounds))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
