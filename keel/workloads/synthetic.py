"""synthetic: a generated table, for trying keel without data and for testing the platform.

Every batch is drawn from a seeded generator (the seed is a param, never drawn at run
time), so a batch's bytes are the same on every machine. Columns: ``id`` (the split
key), ``segment`` (a/b/c) and ``channel`` (web/store) categorical, ``x1``..``x3``
numeric (``x3`` has missing values), ``visits`` (a count, integer), and ``target``:
binary (0/1), multiclass (``low``/``mid``/``high``) or regression, a known function
of the features plus noise. From batch ``shift_from`` on, ``x1`` and ``segment`` drift, so the drift
monitor has something to find. Batches are ``b01``, ``b02``...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from keel.workloads import Workload, WorkloadParams, unfailable

if TYPE_CHECKING:
    import pandas as pd

GATES: dict[str, dict[str, Any]] = {
    "binary": {"test/roc_auc": {"min": 0.6, "max_drop": 0.05}, "test/log_loss": {"max_rise": 0.05}},
    "multiclass": {"test/accuracy": {"min": 0.5, "max_drop": 0.05}},
    "regression": {"test/r2": {"min": 0.3, "max_drop": 0.05}},
}
SLICE_METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "r2"}


class SyntheticParams(WorkloadParams):
    objective: Literal["binary", "multiclass", "regression"] = "binary"
    rows: int = Field(default=800, ge=10)  # per batch
    batches: int = Field(default=6, ge=1, le=99)
    demo_batches: int = Field(default=2, ge=1)
    shift_from: int = Field(default=0, ge=0)  # first drifted batch (1-based); 0: none drifts
    seed: int = 7
    noise: bool = False  # a column ``noise`` the target ignores, among the features (explanations' tests)


class SyntheticWorkload(Workload):
    name: ClassVar[str] = "synthetic"
    summary: ClassVar[str] = (
        "a seeded generated table (no data needed): binary, multiclass or regression; batches b01.."
    )
    Params = SyntheticParams
    params: SyntheticParams

    def defaults(self) -> dict[str, Any]:
        gate = GATES[self.params.objective]
        return {
            "features": {
                "label": "target",
                "categorical": ["segment", "channel"],
                "numeric": ["x1", "x2", "x3", "visits"] + (["noise"] if self.params.noise else []),
                "slices": ["segment"],
            },
            "gate": {"metrics": gate, "slice_metric": SLICE_METRIC[self.params.objective]},
            # batches are draws of one generator (until shift_from): no time order by default;
            # split.holdout = "newest" makes them a stream
            "split": {"holdout": "random"},
            "train": {"batch_size": 128, "max_epochs": 20, "hidden": [32]},
            "tune": {
                "space": {
                    "train.lr": {"low": 3e-4, "high": 3e-2, "log": True},
                    "train.hidden": {"choices": [[32], [64, 32], [128, 64]]},
                    "train.dropout": {"low": 0.0, "high": 0.4},
                }
            },
            "profiles": {"test": {"gate": {"metrics": unfailable(gate)}, "data": {"sample_rows": 0}}},
        }

    def init_toml(self) -> str:
        return f'[workload]\nname = "synthetic"\nparams = {{ objective = "{self.params.objective}" }}\n'

    def objective(self) -> str:
        return self.params.objective

    def split_key(self) -> list[str]:
        return ["id"]

    def batches(self) -> list[str]:
        return [f"b{i:02d}" for i in range(1, self.params.batches + 1)]

    def demo_batches(self) -> list[str]:
        return self.batches()[: self.params.demo_batches]

    def build_batch(self, name: str, sample_rows: int) -> pd.DataFrame:
        self.check_batch_name(name)
        frame = generate(self.params, int(name[1:]))
        return frame.head(sample_rows) if sample_rows else frame


def generate(params: SyntheticParams, index: int) -> pd.DataFrame:
    """Batch ``index`` (1-based): ``params.rows`` rows from a generator seeded by
    (seed, index); ids continue from batch to batch."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([params.seed, index])
    n = params.rows
    drifted = bool(params.shift_from) and index >= params.shift_from
    segment = rng.choice(["a", "b", "c"], size=n, p=[0.2, 0.3, 0.5] if drifted else [0.5, 0.3, 0.2])
    channel = rng.choice(["web", "store"], size=n)
    x1 = rng.normal(1.5 if drifted else 0.0, 1.0, n)
    x2 = rng.normal(0.0, 1.0, n)
    x3 = rng.uniform(0.0, 10.0, n)
    x3[rng.random(n) < 0.05] = np.nan
    visits = rng.poisson(3.0, n).astype("int64")
    effect = {"a": -0.8, "b": 0.0, "c": 0.8}
    score = (
        1.5 * x1
        - 1.0 * x2
        + np.vectorize(effect.__getitem__)(segment)
        + 0.4 * (channel == "web")
        + 0.1 * np.nan_to_num(x3, nan=5.0)
        + 0.1 * visits
        - 0.8
    )
    noisy = score + rng.normal(0.0, 0.7, n)
    if params.objective == "binary":
        target: Any = (noisy > 0).astype("int64")
    elif params.objective == "multiclass":
        target = np.select([noisy < -1.0, noisy < 1.0], ["low", "mid"], "high")
    else:
        target = 10.0 + 2.0 * noisy
    frame = pd.DataFrame(
        {
            "id": np.arange((index - 1) * n, index * n, dtype="int64"),
            "segment": segment,
            "channel": channel,
            "x1": x1,
            "x2": x2,
            "x3": x3,
            "visits": visits,
            "target": target,
        }
    )
    if params.noise:  # drawn last, from its own stream: the other columns stay as they were
        frame["noise"] = np.random.default_rng([params.seed, index, 1]).normal(0.0, 1.0, n)
    return frame
