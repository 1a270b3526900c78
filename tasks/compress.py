"""Compression tasks: load a registered version's parts, build its variant, measure
parity on the version's own held-out rows, gate it, register it as a new version
derived from the source."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import CompressConfig, GateConfig, MlflowStore, TrainConfig
from keel.data.types import Splits
from keel.errors import KeelError, retry_transient
from keel.model.evaluation import Evaluation
from keel.registry.gate import Baseline, GateResult
from keel.registry.lineage import Lineage
from keel.registry.version import RegisteredVersion
from tasks.register import TAGGED_METRICS

TRACE_ROWS = 8  # held-out rows the net is traced with (the same ones on a replay)
NAMES = {"preprocessor": "preprocessor.json", "net": "net.json", "weights": "weights.pt"}
# a version trained with an adapter (keel.model.runtime.adapters): loaded merged into its base
ADAPTER_NAMES = {
    "preprocessor": "preprocessor.json",
    "net": "net.json",
    "adapter": "adapter",
    "head": "head.safetensors",
}


@dataclass(frozen=True)
class Parity:
    """What the variant is worth against its source, on the source's held-out rows."""

    source_version: str
    method: str
    metrics: dict[str, float]  # parity/*: agreement, max_abs_diff, size and latency ratios
    latency: dict[str, Any] = field(default_factory=dict)  # model -> rows -> p50_ms/p99_ms
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of the source's weights and the variant

    def to_json(self) -> dict[str, Any]:
        return {
            "source_version": self.source_version,
            "method": self.method,
            "metrics": self.metrics,
            "latency": self.latency,
            "sizes": self.sizes,
        }


@task(
    name="load-source-model",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def load_source_model(store: MlflowStore, lineage: Lineage, directory: Path) -> tuple[Any, Path]:
    """Version N's preprocessor, net, threshold and objective from the registry, as a
    keel.model.training.TrainedModel, and the directory its artifacts were downloaded to (the
    source's latency is measured on those very files)."""
    import mlflow

    from keel.model.runtime.pyfunc import load_parts
    from keel.model.training import TrainedModel
    from keel.registry import tracking

    if lineage.derived_from:
        raise KeelError(
            f"v{lineage.version} is already a compressed variant ({lineage.compression}) of "
            f"v{lineage.derived_from}: compress v{lineage.derived_from} instead"
        )
    tracking.use_tracking(store)
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{lineage.name}/{lineage.version}", dst_path=str(directory / "source-model")
        )
    )
    names = NAMES if (local / "artifacts" / NAMES["weights"]).is_file() else ADAPTER_NAMES
    artifacts = {n: str(local / "artifacts" / f) for n, f in names.items()}
    missing = [f for f in artifacts.values() if not Path(f).exists()]
    if missing:
        raise KeelError(
            f"v{lineage.version} is not a keel net model (no {', '.join(missing)}): cannot compress"
        )
    family, preprocessor, net, threshold, objective = load_parts(artifacts)
    source = TrainedModel(preprocessor, net, threshold, 0, None, None, objective, family)
    return source, local / "artifacts"


def recovery(source, splits: Splits, train: TrainConfig, epochs: int, target: str = "labels"):
    """The pruned net's fine-tune: the source's recorded ``[train]`` (its seed, batch, step
    size), at most ``epochs`` epochs on the source's own train split, best val/loss kept; the
    whole net trains (an adapter version is compressed merged). ``target``: "labels" (the
    objective's loss) or "distill" (the source net's raw outputs on the same rows)."""
    from keel.model.compress import Recovery
    from keel.model.training import fine_tune

    cfg = train.model_copy(update={"max_epochs": max(1, epochs), "adapter": ""})

    def run(net, original):
        teacher = original if target == "distill" else None
        return fine_tune(
            source.family, net, source.preprocessor, source.objective, splits.train, splits.val, cfg, teacher
        )

    return Recovery(epochs, run, target)


@task(name="build-variant", cache_policy=NONE)
def build_variant(
    source,
    splits: Splits,
    method: str,
    directory: Path,
    sparsity: float,
    recovery_epochs: int = 0,
    train: TrainConfig | None = None,
    recovery_target: str = "labels",
):
    """The compressed variant of ``source``, traced on the first held-out rows (``sparsity``,
    ``recovery_epochs``, ``recovery_target``: [compress]'s, for the pruning methods; ``train``:
    the source's recorded [train], which the recovery fine-tune follows)."""
    from keel.model.compress import compress

    sample = splits.test.head(TRACE_ROWS).reset_index(drop=True)
    recover = (
        recovery(source, splits, train, recovery_epochs, recovery_target)
        if recovery_epochs and train
        else None
    )
    return compress(source, method, sample, directory / "variant", sparsity, recover)


def served_bytes(artifacts: Path) -> int:
    """The weights a version serves from: weights.pt, or an adapter's files and its base's."""
    if (artifacts / NAMES["weights"]).is_file():
        return (artifacts / NAMES["weights"]).stat().st_size
    import json

    from keel.model.runtime.adapters import Adapter

    adapter = Adapter.from_dict(json.loads((artifacts / "net.json").read_text())["adapter"])
    files = [*(artifacts / ADAPTER_NAMES["adapter"]).iterdir(), artifacts / ADAPTER_NAMES["head"]]
    return sum(f.stat().st_size for f in files) + adapter.base.resolve().stat().st_size


@task(name="measure-parity", cache_policy=NONE)
def measure_parity(
    compress: CompressConfig,
    lineage: Lineage,
    source,
    source_artifacts: Path,
    variant,
    source_eval: Evaluation,
    evaluation: Evaluation,
    splits: Splits,
    directory: Path,
) -> Parity:
    """Agreement and output distance on the held-out rows; size; p50/p99 latency of both
    models at 1 and 32 rows, each in a fresh process."""
    from keel.model.compress import agreement, latency_in_fresh_process

    metrics = {
        f"parity/{k}": v
        for k, v in agreement(variant.objective, source_eval.out_test, evaluation.out_test).items()
    }
    source_dir = source_artifacts
    rows = splits.test[source.preprocessor.columns]
    latency = latency_in_fresh_process(
        {"source": source_dir, "variant": variant.path.parent},
        rows,
        directory / "latency",
        rounds=compress.latency_rounds,
    )
    sizes = {"source": served_bytes(source_dir), "variant": variant.path.stat().st_size}
    metrics["parity/size_ratio"] = sizes["variant"] / sizes["source"]
    for rows_n in latency["source"]:
        for q in ("p50_ms", "p99_ms"):
            ratio = latency["variant"][rows_n][q] / latency["source"][rows_n][q]
            metrics[f"parity/{q.removesuffix('_ms')}_ratio_{rows_n}"] = ratio
    return Parity(lineage.version, variant.method, metrics, latency, sizes)


@task(name="parity-gate", cache_policy=NONE)
def parity_gate(
    compress: CompressConfig,
    gate: GateConfig,
    lineage: Lineage,
    evaluation: Evaluation,
    source_eval: Evaluation,
    parity: Parity,
) -> GateResult:
    """The gate's metrics, each allowed to fall (rise) at most compress.max_drop (max_rise)
    against the source on the same rows, and the label agreement floor; the slice guard
    as the gate has it."""
    from keel.config.settings import MetricRule
    from keel.model.direction import higher_is_better
    from keel.registry.gate import evaluate_gate

    c = compress
    rules = {
        name: MetricRule(max_drop=c.max_drop) if higher_is_better(name) else MetricRule(max_rise=c.max_rise)
        for name in gate.metrics or [f"test/{evaluation.objective.headline}"]  # none: the headline
    }
    if "parity/agreement" in parity.metrics:
        rules["parity/agreement"] = MetricRule(min=c.min_agreement)
    cfg = GateConfig(
        metrics=rules,
        slice_metric=gate.slice_metric,
        slice_min_rows=gate.slice_min_rows,
        slice_max_drop=c.max_drop,
    )
    result = evaluate_gate(
        cfg,
        {**evaluation.metrics, **parity.metrics},
        evaluation.slices,
        lineage.version,
        source_eval.metrics,
        source_eval.slices,
        against=f"v{lineage.version}",
    )
    why = f"the parity gate: [compress] limits against v{lineage.version} on the gate's metrics"
    return replace(result, rules_from=why if gate.metrics else why + " (none set: the headline metric)")


@task(name="register-variant", cache_policy=NONE)  # not retried: a retry could add a second version
def register_variant(
    store: MlflowStore,
    profile: str | None,
    lineage: Lineage,
    variant,
    splits: Splits,
    evaluation: Evaluation,
    parity: Parity,
) -> RegisteredVersion:
    """A new MLflow run holding the source's lineage records (config, data pointer,
    partitions) and the parity evidence, and a new version of the same registered model
    tagged ``derived_from`` and ``compression``; it becomes ``challenger``."""
    import math

    from mlflow.entities import Metric, Param

    from keel.registry import packaging, tracking
    from keel.registry.lineage import environment_lock, numerics

    client = tracking.client(store)
    experiment_id = tracking.ensure_experiment(store)
    env_hash, packages = environment_lock()
    source_mv = client.get_model_version(lineage.name, lineage.version)
    inherited = {
        k: v
        for k, v in (source_mv.tags or {}).items()
        if k
        in (
            "data_version",
            "git_sha",
            "data_commit",
            "config_hash",
            "validation_status",
            "seed",
            "data_in_remote",
            "refit",
            "model.family",
            "model.target",
            "model.code_sha256",
            "model.code_git",
        )
    }
    tags = {
        **inherited,
        "derived_from": lineage.version,
        "compression": variant.method,
        "source_weights_sha256": lineage.weights_sha256,
        "weights_sha256": variant.sha256,
        "env_hash": env_hash,
        # the source's weights and this compression both rebuild bit for bit on their kind of CPU
        "numerics": " | ".join(dict.fromkeys(filter(None, [lineage.numerics, numerics()]))),
        **variant.params,  # the method's settings (compress.sparsity): replay compresses the same way
    }
    run = client.create_run(
        experiment_id,
        run_name=f"v{lineage.version} {variant.method}",
        tags={
            **tags,
            "profile": profile or "default",
            **tracking.process_tags(store),
        },
    )
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        metrics = {**evaluation.metrics, **parity.metrics}
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in sorted(metrics.items()) if not math.isnan(v)],
        )
        params = dict(client.get_run(lineage.run_id).data.params)  # the source's, to compare in the UI
        params.update({"compress.method": variant.method, "compress.source_version": lineage.version})
        params.update(variant.params)
        client.log_batch(run_id, params=[Param(k, v) for k, v in sorted(params.items())])
        client.log_dict(run_id, lineage.config, "config/resolved.json")
        client.log_text(run_id, lineage.dvc_file, "data/data.dvc")
        client.log_dict(run_id, lineage.partitions, "data/partitions.json")
        client.log_text(run_id, "\n".join(packages) + "\n", "environment/packages.txt")
        client.log_dict(run_id, parity.to_json(), "compress/parity.json")

        example = splits.test[variant.preprocessor.columns].head(5).reset_index(drop=True)
        info = packaging.log_pyfunc(
            store,
            run_id,
            variant.entry,
            variant.artifacts,
            example,
            variant.predict(example),
            (*getattr(variant.preprocessor, "REQUIREMENTS", ()), *variant.runtime),
            family=variant.family,
        )
        version_tags = {
            **tags,
            **{k: f"{evaluation.metrics[k]:.6g}" for k in TAGGED_METRICS if k in evaluation.metrics},
        }
        mv = client.create_model_version(
            lineage.name, source=info.model_uri, run_id=run_id, model_id=info.model_id, tags=version_tags
        )
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    client.set_registered_model_alias(lineage.name, "challenger", mv.version)
    return RegisteredVersion(lineage.name, str(mv.version), run_id, info.model_uri, ["challenger"])


@task(name="source-baseline", cache_policy=NONE)
def source_baseline(store: MlflowStore, lineage: Lineage, source_eval: Evaluation) -> Baseline:
    """The source version as the gate's baseline (its diff card compares against it)."""
    from keel.registry import tracking

    params = dict(tracking.client(store).get_run(lineage.run_id).data.params)
    return Baseline(lineage.version, lineage.data_version, params, source_eval.metrics, source_eval.slices)
