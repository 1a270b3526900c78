"""One settings object for every location and knob keel uses.

Layers, later wins: the packaged ``keel/config/defaults.toml`` < ``<workspace>/keel.toml``
< ``[profiles.<name>]`` < MLflow's own ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``
< ``KEEL_<SECTION>__<KEY>`` environment variables < explicit overrides. Each location
remembers the layer it came from (``Settings.sources``, shown by ``keel config``).
Loading reads files and the environment only: it creates nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.errors import ConfigError

WORKSPACE_FILE = "keel.toml"
ENV_PREFIX = "KEEL_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    dir: Path
    suite: Path | None  # None: the workload's default suite (keel.workloads.load_suite_for)
    demo_batches: list[str]  # []: the workload's own demo batches
    sample_rows: int = Field(ge=0)


class SplitConfig(_Section):
    val_pct: int = Field(ge=1, le=45)
    test_pct: int = Field(ge=1, le=45)
    salt: str
    # "newest": train on the older batches, gate on the newest (rows no model trained on and
    # newer than the challenger's data), then refit on all; "random": the hash split of every
    # batch. Defaults: what versions recorded before the key existed trained with.
    holdout: Literal["newest", "random"] = "random"
    refit: bool = False  # "newest": once blessed, fit the same config again on every batch


class FeatureConfig(_Section):
    label: str
    categorical: list[str]
    numeric: list[str]
    slices: list[str]
    slice_min_rows: int = Field(default=30, ge=1)  # smaller slices are left out of test/slice_gap/*
    text: list[str] = Field(
        default_factory=list
    )  # one free-text column, read by a bert net (keel.model.families.bert)


class LoraConfig(_Section):
    """``[train.lora]``: the LoRA adapter ``[train] adapter = "lora"`` trains (Hugging Face
    peft's LoraConfig: rank ``r``, ``alpha``, ``dropout``, the ``target_modules`` it adapts,
    named by the last part of their module names in the family's pre-trained encoder)."""

    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)


class TrainConfig(_Section):
    seed: int
    strategy: Literal["auto", "ddp"]
    devices: int = Field(ge=1)
    num_nodes: int = Field(ge=1)
    ddp_start_method: Literal["spawn", "popen"]
    max_epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    hidden: list[int]
    dropout: float = Field(ge=0, lt=1)
    emb_dim_max: int = Field(ge=1)
    patience: int = Field(ge=1)
    limit_train_batches: float | int
    num_threads: int = Field(ge=1)
    threshold_policy: Literal["fixed", "max_f1"]
    threshold: float = Field(gt=0, lt=1)
    eval_batch_size: int = Field(default=4096, ge=1)  # rows per validation step
    accelerator: str = "cpu"  # Lightning's: "cpu", "gpu", "auto"...
    precision: str = "32-true"  # Lightning's: "32-true", "bf16-mixed" (autocast), "16-mixed"
    # "lora": the pre-trained encoder stays frozen, a LoRA adapter ([train.lora]) and the head train;
    # the version stores the adapter and a reference to its base (keel.model.runtime.adapters)
    adapter: Literal["", "lora"] = ""
    lora: LoraConfig = Field(default_factory=LoraConfig)


class MlflowConfig(_Section):
    tracking_uri: str
    registry_uri: str
    artifact_root: str
    experiment: str
    model_name: str


class WorkloadConfig(_Section):
    """``[workload]``: what is learnt (keel.workloads). ``params`` is validated by the
    chosen workload's own Params model when it is loaded."""

    name: str = "flights"  # default: configs recorded before workloads existed were flights
    target: str = ""
    params: dict[str, Any] = Field(default_factory=dict)

    def is_default(self) -> bool:
        return self.name == "flights" and not self.target and not self.params


class ModelConfig(_Section):
    """``[model]``: the network family (keel.model.families). All empty: the workload's
    choice (``Workload.net_options``). ``name``: one of keel's (mlp, conv, bert) with its
    ``params``; ``target``: a team's own ``module:Class``, its ``params`` validated by the
    class's own Params model when it is loaded."""

    name: str = ""
    target: str = ""
    params: dict[str, Any] = Field(default_factory=dict)

    def is_default(self) -> bool:
        return not (self.name or self.target or self.params)


class DvcConfig(_Section):
    remote: str
    remote_url: str
    endpoint_url: str
    # defaults: configs recorded by model versions before these keys existed
    git_commit: bool = True
    git_tag: bool = False
    lock_timeout_s: float = Field(default=600.0, gt=0)


class PrefectConfig(_Section):
    api_url: str
    ephemeral: Literal["managed", "prefect"] = "managed"  # default: versions recorded before it
    retrain_cron: str
    monitor_cron: str
    timezone: str


class UpConfig(_Section):
    host: str
    prefect_port: int = Field(ge=1, le=65535)
    mlflow_port: int = Field(ge=1, le=65535)
    state_dir: Path
    ready_timeout_s: float = Field(gt=0)


class ReportsConfig(_Section):
    dir: Path


class MetricRule(_Section):
    """Higher-is-better: min / max_drop. Lower-is-better: max / max_rise."""

    min: float | None = None
    max_drop: float | None = None
    max: float | None = None
    max_rise: float | None = None


class GateConfig(_Section):
    metrics: dict[str, MetricRule]
    slice_metric: str
    slice_min_rows: int = Field(ge=0)
    slice_max_drop: float = Field(ge=0)


class GuardrailConfig(_Section):
    """``[guardrail]``: the champion scored on every labelled batch that arrives, before
    anything else. Rules in the gate's format, on ``test/<metric>`` of the new batch: min /
    max are floors and ceilings; max_drop / max_rise compare with the champion's own gate
    metrics (what it showed on its holdout when it was registered)."""

    metrics: dict[str, MetricRule] = Field(default_factory=dict)  # {}: scores logged, nothing judged
    policy: Literal["auto", "review"] = "auto"  # auto: roll back to the last attested champion that holds
    min_rows: int = Field(default=50, ge=1)  # a smaller batch is scored and logged, not judged


class DriftConfig(_Section):
    alpha: float = Field(gt=0, lt=1)
    min_effect: float = Field(ge=0)
    share_threshold: float = Field(gt=0, le=1)
    experiment_suffix: str
    trigger: bool
    cooldown_s: float = Field(ge=0)
    predictions: bool = False  # also compare the champion's predicted-label mix (and text embeddings)


class ServeConfig(_Section):
    host: str
    port: int = Field(ge=0, le=65535)
    poll_s: float = Field(gt=0)
    max_records: int = Field(ge=1)
    max_body_bytes: int = Field(ge=1)
    chunk_rows: int = Field(ge=1)


class PromotionConfig(_Section):
    policy: Literal["auto", "review"]
    servability_rows: int = Field(ge=1)
    lock_timeout_s: float = Field(gt=0)
    reviewers: list[str] = Field(default_factory=list)  # who may move champion ([]: anyone)
    enforce: bool = False  # a champion moved outside keel is moved back to the ledger's, on record


class CompressConfig(_Section):
    """``[compress]``: keel compress and the train flow's automatic compression."""

    method: Literal["onnx-int8", "onnx", "prune", "prune-int8"] = "onnx-int8"
    sparsity: float = Field(default=0.5, gt=0, lt=1)  # prune, prune-int8: the share of units removed
    recovery_epochs: int = Field(default=0, ge=0)  # ... then at most this many epochs of fine-tune (0: none)
    recovery: Literal["labels", "distill"] = "labels"  # ... towards the labels, or the source's outputs
    auto: bool = False  # the train flow compresses every version the gate blessed
    max_drop: float = Field(default=0.01, ge=0)  # parity: a gate metric may fall this much vs the source
    max_rise: float = Field(default=0.02, ge=0)  # ... or rise this much (lower-is-better metrics)
    min_agreement: float = Field(default=0.95, ge=0, le=1)  # share of held-out rows with the source's label
    latency_rounds: int = Field(default=30, ge=1)  # timed predictions per batch size, in a fresh process


class ExplainConfig(_Section):
    """``[explain]``: the explanation logged with every training (keel.model.explain) and POST /explain."""

    enabled: bool = True
    rows: int = Field(default=1000, ge=10)  # held-out rows the global explanation reads (ablation, saliency)
    token_rows: int = Field(default=64, ge=1)  # ... for token attributions (integrated gradients cost more)
    repeats: int = Field(default=5, ge=1)  # shuffles per column (permutation importance)
    top: int = Field(default=20, ge=1)  # tokens kept in the table
    max_records: int = Field(default=100, ge=1)  # per POST /explain request; more is a 413


class SearchParam(_Section):
    """One dimension of ``[tune] space``: a range (``low``/``high``, ``log``, ``step``) or
    ``choices``; the key is the dotted setting it sets (``train.lr``)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False  # a whole number (train.batch_size)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchParam:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either low and high, or choices")
        if self.choices is not None and not self.choices:
            raise ValueError("choices is empty")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low {self.low} is not below high {self.high}")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class TuneConfig(_Section):
    """``[tune]``: keel tune's Optuna study (the workload declares ``space``)."""

    trials: int = Field(default=20, ge=1)
    timeout_s: float = Field(default=0, ge=0)  # 0: no limit
    concurrency: int = Field(default=2, ge=1)  # trials running at once
    runner: Literal["process", "thread", "dask"] = "process"
    dask_address: str = ""  # runner "dask": "" = a local cluster of `concurrency` workers; else its scheduler
    storage: str = ""  # Optuna RDB URL; "": sqlite beside the MLflow store (mlflow/optuna.db)
    study: str = ""  # "": <model_name>-tune
    warmup_epochs: int = Field(default=2, ge=0)  # epochs before the median pruner may stop a trial
    space: dict[str, SearchParam] = Field(default_factory=dict)
    # set by keel tune on the best config's training: its lineage records where it came from
    from_study: str = ""
    from_trial: int = -1


class MlflowStore(_Section):
    """Where a workspace's runs and models live: what the MLflow edge (keel.registry.tracking)
    and every task that touches MLflow take instead of the whole settings. ``workspace`` tags
    the runs (their orphans are found by it); ``monitoring_suffix`` names the drift experiment."""

    workspace: Path
    mlflow: MlflowConfig
    monitoring_suffix: str = "-monitoring"


class DataStore(_Section):
    """A workspace's data: its git repository, the DVC-tracked data directory and the DVC
    remote; what the git/DVC edge (keel.data.workspace) and the data tasks take."""

    workspace: Path
    dir: Path
    dvc: DvcConfig

    @property
    def dvc_file(self) -> Path:
        """DVC writes the pointer next to the tracked directory: ``data`` -> ``data.dvc``."""
        return self.dir.with_name(self.dir.name + ".dvc")


# The layout of a resolved config. A model version records its resolved settings
# (config/resolved.json); ``migrate`` brings a recorded one up to this layout.
CONFIG_VERSION = 2


class Settings(_Section):
    """Resolved settings: every path absolute, every URI explicit."""

    config_version: int = CONFIG_VERSION
    workspace: Path
    profile: str | None = None
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    split: SplitConfig
    features: FeatureConfig
    train: TrainConfig
    mlflow: MlflowConfig
    dvc: DvcConfig
    prefect: PrefectConfig
    reports: ReportsConfig
    gate: GateConfig
    promotion: PromotionConfig
    serve: ServeConfig
    drift: DriftConfig
    up: UpConfig
    compress: CompressConfig = Field(default_factory=CompressConfig)
    guardrail: GuardrailConfig = Field(default_factory=GuardrailConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    # location key -> the layer it came from; not part of the config (excluded from dumps)
    sources: dict[str, str] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="after")
    def _refit_needs_keel_launched_ranks(self) -> Settings:
        # an outside launcher's ranks fit once; a refit after the gate would leave rank 0 alone
        if (
            self.train.strategy == "ddp"
            and self.train.ddp_start_method == "popen"
            and self.split.holdout == "newest"
            and self.split.refit
        ):
            raise ValueError(
                "split.refit = true needs ranks keel starts itself (train.ddp_start_method = "
                '"spawn"); with an outside launcher set split.refit = false or split.holdout = "random"'
            )
        return self

    @property
    def dvc_file(self) -> Path:
        """DVC writes the pointer next to the tracked directory: ``data`` -> ``data.dvc``."""
        return self.data_store.dvc_file

    @property
    def mlflow_store(self) -> MlflowStore:
        """The MLflow edge's part of these settings."""
        return MlflowStore.model_construct(
            workspace=self.workspace, mlflow=self.mlflow, monitoring_suffix=self.drift.experiment_suffix
        )

    @property
    def data_store(self) -> DataStore:
        """The git/DVC edge's part of these settings."""
        return DataStore.model_construct(workspace=self.workspace, dir=self.data.dir, dvc=self.dvc)

    def model_inputs(self) -> dict[str, Any]:
        """The part of the config that determines the trained model. The workload counts
        only when it is not the default one, so a default config hashes as it did before
        workloads existed (and versions registered then replay unchanged)."""
        include = {"split", "features", "train"} | (set() if self.workload.is_default() else {"workload"})
        include |= set() if self.model.is_default() else {"model"}  # the workload's choice: as before
        inputs = self.model_dump(mode="json", include=include)
        for dotted, neutral in NEUTRAL_INPUTS.items():  # keys added later count only when set
            section, key = dotted.split(".")
            if inputs[section].get(key) == neutral:
                del inputs[section][key]
        if "adapter" not in inputs["train"]:  # no adapter: its settings shape nothing
            inputs["train"].pop("lora", None)
        return inputs

    def config_hash(self) -> str:
        blob = json.dumps(self.model_inputs(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with dotted-key overrides applied (``{"train.max_epochs": 1}``)."""
        raw = self.model_dump(mode="json")
        _merge(raw, _undot(overrides))
        sources = {**self.sources, **{k: "override" for k in overrides if k in SOURCED_KEYS}}
        return Settings.model_validate({**raw, "sources": sources})


# Model inputs added after versions were registered, with the value that means "as
# before": left out of model_inputs() at that value, so older configs hash as they did.
NEUTRAL_INPUTS: dict[str, Any] = {
    "features.text": [],
    "train.eval_batch_size": 4096,
    "train.accelerator": "cpu",
    "train.precision": "32-true",
    "train.adapter": "",
    "split.holdout": "random",
    "split.refit": False,
    "features.slice_min_rows": 30,
}


def _defaults() -> dict[str, Any]:
    text = resources.files("keel.config").joinpath("defaults.toml").read_text()
    return tomllib.loads(text)


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _workload_defaults(
    base: Mapping[str, Any], layers: list[dict[str, Any]]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(name, settings, profiles) the chosen workload brings (keel.workloads.Workload.defaults),
    the workload resolved through keel.targets."""
    import copy

    from keel import targets

    choice: dict[str, Any] = copy.deepcopy(dict(base.get("workload", {})))
    for layer in layers:
        _merge(choice, layer.get("workload", {}))
    kind = targets.WORKLOADS
    cls = targets.choose(kind, str(choice.get("name", "")), str(choice.get("target", "")))
    workload = targets.instantiate(kind, cls, choice.get("params"))
    brought = copy.deepcopy(workload.defaults())
    profiles = brought.pop("profiles", {})
    brought.pop("workload", None)  # a workload does not choose the workload
    return workload.name, brought, profiles


def migrate(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config recorded by an older keel (a model version's
    config/resolved.json), in the current layout (``CONFIG_VERSION``).

    Version 1 (no ``config_version``; before workloads): the workload was flights and
    the demo batches were ``data.demo_months``. The model inputs (split, features,
    train) are untouched, so the recorded config hash still holds."""
    import copy

    raw = copy.deepcopy(dict(recorded))
    version = int(raw.get("config_version", 1))
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"config_version {version} was recorded by a newer keel (this one reads up to "
            f"{CONFIG_VERSION}): upgrade keel"
        )
    if version < 2:
        raw.setdefault("workload", {"name": "flights", "target": "", "params": {}})
        data = raw.setdefault("data", {})
        data["demo_batches"] = data.pop("demo_months", [])
    raw["config_version"] = CONFIG_VERSION
    return raw


def _undot(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _keel_env_layers(environ: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """``KEEL_TRAIN__MAX_EPOCHS=3`` -> ``("env KEEL_TRAIN__MAX_EPOCHS", {"train": {"max_epochs": "3"}})``;
    JSON for lists. One layer per variable, so each location knows which one set it."""
    layers = []
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        parsed: Any = value
        if value.startswith(("[", "{")):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment variable {name}: not valid JSON: {exc}") from exc
        layers.append((f"env {name}", _undot({key: parsed})))
    return layers


# MLflow's own variables, honoured below KEEL_*: a user who exported them expects their server.
MLFLOW_ENV = {"MLFLOW_TRACKING_URI": "mlflow.tracking_uri", "MLFLOW_REGISTRY_URI": "mlflow.registry_uri"}


# MLflow writes MLFLOW_TRACKING_URI into os.environ whenever set_tracking_uri() runs (keel's
# fluent calls, Lightning's MLFlowLogger), so after a process's first run the live variable
# names the store keel itself chose, not the user's. For os.environ keel therefore reads
# MLflow's variables as they were at the process's first load_settings (before any MLflow call).
_process_mlflow_env: dict[str, str] | None = None


def _user_mlflow_env(environ: Mapping[str, str]) -> dict[str, str]:
    global _process_mlflow_env
    if environ is not os.environ:
        return {name: environ[name] for name in MLFLOW_ENV if environ.get(name)}
    if _process_mlflow_env is None:
        _process_mlflow_env = {name: os.environ[name] for name in MLFLOW_ENV if os.environ.get(name)}
    return _process_mlflow_env


def _mlflow_env_layers(environ: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    user = _user_mlflow_env(environ)
    return [(f"env {name}", _undot({MLFLOW_ENV[name]: value})) for name, value in user.items()]


# The settings that say where things live (paths, and the addresses below); `keel config`
# shows which layer set each one.
PATH_KEYS = ("data.dir", "data.suite", "reports.dir", "up.state_dir")


def _get(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _derived_sources(sources: dict[str, str], raw: Mapping[str, Any]) -> dict[str, str]:
    """Name the rule for locations left empty by every layer and filled in by _resolve."""
    out = dict(sources)
    derived = {
        "mlflow.tracking_uri": "derived: sqlite under <workspace>/mlflow/",
        "mlflow.registry_uri": "derived: = mlflow.tracking_uri",
        "mlflow.artifact_root": "derived: <workspace>/mlflow/artifacts, or the HTTP server's own",
        "data.suite": "derived: the workload's default suite",
        "prefect.api_url": "none: a server of each command's own, or `keel up`'s",
    }
    for key, rule in derived.items():
        if out[key].startswith("default") and not _get(raw, key):
            out[key] = rule
    return out


def find_workspace(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` that holds a keel.toml."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / WORKSPACE_FILE).is_file():
            return candidate
    raise ConfigError(
        f"no {WORKSPACE_FILE} found in {here} or its parents: run 'keel init DIR' "
        f"or pass --workspace / set KEEL_WORKSPACE"
    )


def _resolve(raw: dict[str, Any], workspace: Path) -> dict[str, Any]:
    def path(value: str | Path) -> str:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else workspace / p)

    raw["workspace"] = str(workspace)
    raw["data"]["dir"] = path(raw["data"]["dir"])
    suite = raw["data"].get("suite") or ""
    raw["data"]["suite"] = path(suite) if suite else None
    raw["reports"]["dir"] = path(raw["reports"]["dir"])
    raw["up"]["state_dir"] = path(raw["up"]["state_dir"])
    ml = raw["mlflow"]
    workload = raw.get("workload", {}).get("name") or "model"
    ml["experiment"] = ml.get("experiment") or f"keel-{workload}"
    ml["model_name"] = ml.get("model_name") or workload
    if not ml.get("tracking_uri"):
        ml["tracking_uri"] = f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}"
    if not ml.get("registry_uri"):
        ml["registry_uri"] = ml["tracking_uri"]
    remote_tracking = ml["tracking_uri"].startswith(("http://", "https://", "databricks"))
    if not ml.get("artifact_root"):
        # a tracking server decides where artifacts go (its --artifacts-destination)
        ml["artifact_root"] = "" if remote_tracking else (workspace / "mlflow" / "artifacts").as_uri()
    elif "://" not in ml["artifact_root"]:
        ml["artifact_root"] = Path(path(ml["artifact_root"])).as_uri()
    url = raw["dvc"]["remote_url"]
    if "://" not in url:
        raw["dvc"]["remote_url"] = path(url)
    return raw


# The settings that hold addresses; credentials never go in them (see _refuse_secrets).
ADDRESS_KEYS = (
    "mlflow.tracking_uri",
    "mlflow.registry_uri",
    "mlflow.artifact_root",
    "prefect.api_url",
    "dvc.remote_url",
    "dvc.endpoint_url",
)
LOCATION_KEYS = (*PATH_KEYS, *ADDRESS_KEYS)
# ... and the gate's rules: a training's summary says which layer set them (or that none did,
# and the objective's default rule applies)
SOURCED_KEYS = (*LOCATION_KEYS, "gate.metrics")

CREDENTIAL_ENV = (
    "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN for MLflow, "
    "PGPASSWORD for PostgreSQL, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for S3, "
    "PREFECT_API_KEY for Prefect"
)


def redact(uri: str) -> str:
    """An address safe to print: any user:password@ part replaced."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable address>"
    if parts.password is None and "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def _refuse_secrets(raw: dict[str, Any]) -> None:
    from urllib.parse import urlsplit

    for key in ADDRESS_KEYS:
        section, name = key.split(".")
        value = str(raw.get(section, {}).get(name) or "")
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        if password:
            raise ConfigError(
                f"{key} = {redact(value)} holds a password; keel takes credentials "
                f"from environment variables only ({CREDENTIAL_ENV})"
            )


def load_settings(
    workspace: Path | str | None = None,
    *,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings for a workspace (default: KEEL_WORKSPACE, else found from CWD)."""
    env = os.environ if environ is None else environ
    if workspace is None:
        workspace = env.get("KEEL_WORKSPACE") or find_workspace()
    ws = Path(workspace).expanduser().resolve()
    profile = profile or env.get("KEEL_PROFILE") or None

    raw = _defaults()
    profiles = raw.pop("profiles", {})
    ws_file = ws / WORKSPACE_FILE
    ws_raw: dict[str, Any] = {}
    if ws_file.is_file():
        try:
            ws_raw = tomllib.loads(ws_file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{ws_file}: {exc}") from exc
    ws_profiles = ws_raw.pop("profiles", {})
    upper: list[tuple[str, dict[str, Any]]] = []  # the layers above the workload's defaults
    if ws_raw:
        upper.append((str(ws_file), ws_raw))
    if profile:
        chosen = _merge(_merge({}, profiles.get(profile, {})), ws_profiles.get(profile, {}))
        upper.append((f"profile '{profile}'", chosen))
    upper += _mlflow_env_layers(env)
    upper += _keel_env_layers(env)
    if overrides:
        upper.append(("override", _undot(overrides)))
    # The workload any layer chooses brings its own defaults (features, gate, names,
    # profiles), which sit just above defaults.toml and below keel.toml.
    workload_name, workload_layer, workload_profiles = _workload_defaults(raw, [layer for _, layer in upper])
    profiles = _merge(_merge(profiles, workload_profiles), ws_profiles)
    if profile and profile not in profiles:
        raise ConfigError(f"unknown profile {profile!r}; known: {sorted(profiles)}")
    layers: list[tuple[str, dict[str, Any]]] = [(f"workload '{workload_name}' defaults", workload_layer)]
    for layer_name, layer in upper:
        if layer_name == f"profile '{profile}'":
            layer = profiles[str(profile)]  # with the workload's own part of the profile
        layers.append((layer_name, layer))
    sources = {key: "default (keel/config/defaults.toml)" for key in SOURCED_KEYS}
    for name, layer in layers:
        _merge(raw, layer)
        for key in SOURCED_KEYS:
            if _get(layer, key) not in (None, "", {}):
                sources[key] = name
    if raw.get("workload", {}).get("target"):  # a team's class: its own name, not the default's
        raw["workload"]["name"] = workload_name
    raw["profile"] = profile
    _refuse_secrets(raw)
    try:
        sources = _derived_sources(sources, raw)  # before _resolve fills the empty ones
        return Settings.model_validate({**_resolve(raw, ws), "sources": sources})
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"incomplete settings for workspace {ws}: {exc}") from exc
    except ValueError as exc:  # pydantic.ValidationError names the field and the rule
        raise ConfigError(f"invalid settings for workspace {ws}:\n{exc}") from exc
