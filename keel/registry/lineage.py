"""Lineage: what a model version was built from, and how a replay compares."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def environment_lock() -> tuple[str, list[str]]:
    """(sha256 prefix, sorted ``name==version`` of every installed distribution). Read once
    per process while no package directory on ``sys.path`` changes (an install or removal
    changes its mtime): parsing every METADATA file costs ~2 s. Entries that hold no
    distribution metadata (a model's code directory MLflow puts on the path when it loads
    one) do not count."""
    import sys

    digest, packages = _installed(tuple(filter(None, map(_package_dir_state, sys.path))))
    return digest, list(packages)


def _package_dir_state(entry: str) -> tuple[str, int] | None:
    """(entry, mtime) for a sys.path directory that holds distribution metadata, else None."""
    import os

    try:
        with os.scandir(entry or ".") as it:
            if not any(e.name.endswith((".dist-info", ".egg-info")) for e in it):
                return None
        return entry, os.stat(entry or ".").st_mtime_ns
    except OSError:
        return None


@functools.lru_cache(maxsize=4)
def _installed(path_state: tuple[tuple[str, int], ...]) -> tuple[str, list[str]]:
    from importlib.metadata import distributions

    packages = sorted(
        {f"{d.metadata['Name'].lower()}=={d.version}" for d in distributions() if d.metadata["Name"]}
    )
    digest = hashlib.sha256("\n".join(packages).encode()).hexdigest()[:16]
    return digest, packages


@functools.cache
def numerics() -> str:
    """The kind of CPU a model's float arithmetic ran on: the machine, its CPU model and the
    kernels torch dispatches to there (its CPU capability, and ATen's or MKL's override when
    one is set). A version rebuilds bit for bit on the kind it was trained on; on another kind
    the same sums are ordered otherwise (vector width, MKL's kernels and blocking), so a
    replay there differs in the last bits of the weights (its metrics by ~1e-9)."""
    import os

    import torch

    pins = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR") if os.environ.get(k)]
    capability = torch.backends.cpu.get_cpu_capability()
    return " ".join([platform.machine(), f"({_cpu_model()})", "torch", capability, *pins])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def weights_sha256(state_dict: dict[str, Any]) -> str:
    """Checksum of a torch state dict: names, dtypes, shapes and raw bytes, in order."""
    h = hashlib.sha256()
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def package_diff(recorded: list[str], current: list[str]) -> dict[str, list[str]]:
    def split(items):
        return dict(item.split("==", 1) for item in items if "==" in item)

    a, b = split(recorded), split(current)
    return {
        "removed": sorted(f"{k}=={a[k]}" for k in a.keys() - b.keys()),
        "added": sorted(f"{k}=={b[k]}" for k in b.keys() - a.keys()),
        "changed": sorted(f"{k}: {a[k]} -> {b[k]}" for k in a.keys() & b.keys() if a[k] != b[k]),
    }


@dataclass(frozen=True)
class Lineage:
    """Everything recorded about one registered model version."""

    name: str
    version: str
    run_id: str
    data_version: str
    dvc_file: str  # content of data.dvc at training time
    partitions: dict[str, int]  # partition -> rows
    git_sha: str
    config: dict[str, Any]  # resolved settings at training time
    config_hash: str
    env_hash: str
    packages: list[str]
    weights_sha256: str
    metrics: dict[str, float]
    data_commit: str = ""  # the git commit whose data.dvc holds data_version ("": none)
    origin: str = ""  # where a teammate clones the workspace from
    derived_from: str = ""  # a compressed variant: the version it was built from (keel compress)
    compression: str = ""  # ... and the method
    sparsity: float = 0.0  # ... and, for a pruning method, the share of units it removed
    recovery_epochs: int = 0  # ... and the most epochs of fine-tune after pruning (0: none)
    recovery: str = "labels"  # ... towards the labels, or "distill": the source's outputs
    refit: bool = False  # the weights were fit again on every batch after the gate (split.refit)
    # the network family: {"family": name} and, for a team's own, "target", "code_sha256", "code_git"
    model_code: dict[str, str] = field(default_factory=dict)
    # trained with an adapter: {"method", "base" (package==version file), "base_sha256"}
    adapter: dict[str, str] = field(default_factory=dict)
    numerics: str = ""  # the kind of CPU it was trained on (keel.registry.lineage.numerics; "": unrecorded)

    def restore_commands(self) -> str:
        """What a teammate runs to get this version's data with git and DVC alone."""
        if not self.data_commit:
            return "(no git commit holds this data version: dvc.git_commit was off, or data.dvc uncommitted)"
        return f"git clone {self.origin} ws && cd ws && git checkout {self.data_commit} && dvc pull"

    def describe(self) -> str:
        default_workload = {"name": "flights", "target": "", "params": {}}
        model_inputs = {
            k: self.config[k]
            for k in ("workload", "split", "features", "train")
            if k in self.config and not (k == "workload" and self.config[k] == default_workload)
        }
        lines = [
            f"model:        {self.name} v{self.version} (run {self.run_id})",
            f"data version: {self.data_version}",
            *[f"  {name}: {rows} rows" for name, rows in self.partitions.items()],
            f"git sha:      {self.git_sha}",
            f"data commit:  {self.data_commit or 'none'}",
            f"restore data: {self.restore_commands()}",
            f"config hash:  {self.config_hash}",
            "config:       " + json.dumps(model_inputs, sort_keys=True),
            *(
                [
                    f"derived from: v{self.derived_from} by {self.compression} "
                    f"(data, config and seed are v{self.derived_from}'s)"
                ]
                if self.derived_from
                else []
            ),
            *(
                [
                    f"model code:   {self.model_code['target']} "
                    f"sha256 {self.model_code.get('code_sha256', '')}"
                    + (f" (git {self.model_code['code_git']})" if self.model_code.get("code_git") else "")
                ]
                if self.model_code.get("target")
                else []
            ),
            *(
                [
                    f"adapter:      {self.adapter['method']} on {self.adapter.get('base', '')} "
                    f"(base sha256 {self.adapter.get('base_sha256', '')})"
                ]
                if self.adapter.get("method")
                else []
            ),
            f"weights:      sha256 {self.weights_sha256}",
            f"trained on:   {self.numerics or 'an unrecorded kind of CPU'}",
            f"environment:  {self.env_hash} ({len(self.packages)} packages)",
            *[f"  {p}" for p in self.packages],
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class ReplayReport:
    lineage: Lineage
    metrics: dict[str, float]
    weights_sha256: str
    packages: list[str]
    deltas: dict[str, float] = field(default_factory=dict)
    model_code: dict[str, str] = field(default_factory=dict)  # a team family's code now (as Lineage's)
    numerics: str = ""  # the kind of CPU the rebuild ran on

    @property
    def same_numerics(self) -> bool:
        """Rebuilt on the kind of CPU the version was trained on: only there is a difference in
        the weights' bits a difference in what was done."""
        return bool(self.lineage.numerics) and self.lineage.numerics == self.numerics

    @property
    def code_changed(self) -> bool:
        """A team's family whose code differs from what built the version."""
        recorded = self.lineage.model_code.get("code_sha256", "")
        return bool(recorded and self.model_code and self.model_code.get("code_sha256") != recorded)

    @property
    def weights_equal(self) -> bool:
        return self.weights_sha256 == self.lineage.weights_sha256

    @property
    def metrics_identical(self) -> bool:
        return bool(self.deltas) and all(d == 0.0 for d in self.deltas.values())

    @property
    def identical(self) -> bool:
        """The rebuild matches: every metric and the weights' checksum."""
        return self.metrics_identical and self.weights_equal

    def paths(self, reports_dir: Path) -> tuple[Path, Path]:
        """Where the report is written: ``<reports>/replay/<model>-v<N>.md`` and ``.json``."""
        stem = f"{self.lineage.name}-v{self.lineage.version}"
        return reports_dir / "replay" / f"{stem}.md", reports_dir / "replay" / f"{stem}.json"

    @property
    def environment(self) -> dict[str, list[str]]:
        return package_diff(self.lineage.packages, self.packages)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.lineage.name,
            "version": self.lineage.version,
            "data_version": self.lineage.data_version,
            "metrics_identical": self.metrics_identical,
            "metric_deltas": self.deltas,
            "recorded_metrics": self.lineage.metrics,
            "replayed_metrics": self.metrics,
            "weights_equal": self.weights_equal,
            "recorded_weights_sha256": self.lineage.weights_sha256,
            "replayed_weights_sha256": self.weights_sha256,
            "environment_diff": self.environment,
            "numerics": {
                "recorded": self.lineage.numerics,
                "replayed": self.numerics,
                "same": self.same_numerics,
            },
            "model_code": {
                "target": self.lineage.model_code.get("target", ""),
                "recorded_sha256": self.lineage.model_code.get("code_sha256", ""),
                "replayed_sha256": self.model_code.get("code_sha256", ""),
                "changed": self.code_changed,
            },
        }

    def markdown(self) -> str:
        env = self.environment
        lines = [
            f"# Replay of {self.lineage.name} v{self.lineage.version}",
            "",
            f"- data version `{self.lineage.data_version}` re-materialised from the DVC remote"
            + (
                f" at git commit `{self.lineage.data_commit}` (clone, checkout, dvc pull)"
                if self.lineage.data_commit
                else " from the recorded data.dvc (no git commit recorded)"
            ),
            *(
                [
                    f"- a compressed variant: v{self.lineage.derived_from} retrained from its records, "
                    f"then compressed again with {self.lineage.compression}; the checksum is the model file's"
                ]
                if self.lineage.derived_from
                else []
            ),
            *(
                [
                    f"- the team's model code ({self.lineage.model_code['target']}) "
                    + (
                        f"**changed** since the version was built: sha256 "
                        f"`{self.lineage.model_code['code_sha256'][:12]}` -> "
                        f"`{self.model_code['code_sha256'][:12]}`"
                        if self.code_changed
                        else "is the code the version was built with"
                    )
                ]
                if self.lineage.model_code.get("target")
                else []
            ),
            f"- metrics identical: **{self.metrics_identical}**",
            f"- weight checksums equal: **{self.weights_equal}** (`{self.weights_sha256[:16]}`)",
            f"- trained on {self.lineage.numerics or 'an unrecorded kind of CPU'}, rebuilt on "
            + ("the same" if self.same_numerics else self.numerics)
            + (
                ""
                if self.weights_equal or self.same_numerics
                else ": bit-identity is kept on the kind of CPU a version was trained on; here the "
                "float sums run in another order"
            ),
            f"- environment: {len(env['changed'])} changed, {len(env['added'])} added, "
            f"{len(env['removed'])} removed packages",
            "",
            "| metric | recorded | replayed | delta |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {self.lineage.metrics[k]:.6f} | {self.metrics[k]:.6f} | {d:+.2e} |"
            for k, d in sorted(self.deltas.items())
        ]
        for kind in ("changed", "added", "removed"):
            lines += [f"- {kind}: {p}" for p in env[kind]]
        return "\n".join(lines) + "\n"


def compare(
    lineage: Lineage,
    metrics: dict[str, float],
    weights: str,
    packages: list[str],
    model_code: dict[str, str] | None = None,
    numerics: str = "",
) -> ReplayReport:
    deltas = {k: metrics[k] - lineage.metrics[k] for k in metrics if k in lineage.metrics}
    return ReplayReport(lineage, metrics, weights, packages, deltas, dict(model_code or {}), numerics)
