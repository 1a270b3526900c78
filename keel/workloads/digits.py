"""digits: a small conv net on scikit-learn's bundled 8x8 handwritten digits.

Ten classes (multiclass). A row is one image: ``image_id`` (its index in the
bundled set, the split key), the 64 pixel intensities ``p00``..``p63`` (0..16, row
by row) and the label ``digit``. Batches are ordered chunks of the images
(``chunk-1``..), so the scheduled retraining takes the next chunk. The network is
keel.model.families.conv over the pixels reshaped to 1x8x8; served predictions take raw
pixel rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from keel.workloads import Workload, WorkloadParams

if TYPE_CHECKING:
    import pandas as pd

    from keel.config.settings import Settings

SIDE = 8
PIXELS = [f"p{i:02d}" for i in range(SIDE * SIDE)]
LABEL = "digit"
DIGITS = list(range(10))
MAX = 16  # pixel intensities are 0..16


class DigitsParams(WorkloadParams):
    batch_rows: int = Field(default=360, ge=10)  # images per batch: 1797 images -> 5 batches
    demo_batches: int = Field(default=4, ge=1)
    channels: list[int] = Field(default_factory=lambda: [16, 32], min_length=1)  # conv layers


class DigitsWorkload(Workload):
    name: ClassVar[str] = "digits"
    summary: ClassVar[str] = (
        "scikit-learn 8x8 digits: a conv net, multiclass over 10 classes; batches are chunks of images"
    )
    Params = DigitsParams
    params: DigitsParams

    def defaults(self) -> dict[str, Any]:
        rules = {"test/accuracy": {"min": 0.9, "max_drop": 0.01}, "test/log_loss": {"max_rise": 0.05}}
        return {
            "features": {"label": LABEL, "categorical": [], "numeric": PIXELS, "slices": []},
            "gate": {"metrics": rules, "slice_metric": ""},
            "split": {"holdout": "random"},  # chunks of one scanned set: no time order to hold out by
            "train": {"batch_size": 64, "max_epochs": 40, "lr": 0.003, "patience": 6, "hidden": [64]},
            "tune": {  # the conv net's step size, head and regularisation
                "space": {
                    "train.lr": {"low": 3e-4, "high": 1e-2, "log": True},
                    "train.hidden": {"choices": [[32], [64], [128]]},
                    "train.dropout": {"low": 0.0, "high": 0.3},
                    "train.batch_size": {"choices": [32, 64, 128]},
                }
            },
            "profiles": {
                "test": {
                    "gate": {"metrics": {"test/accuracy": {"min": 0.0, "max_drop": 1.0}}},
                    "data": {"sample_rows": 0},
                }
            },
        }

    def objective(self) -> str:
        return "multiclass"

    def net_options(self) -> dict[str, Any]:
        return {"arch": "conv", "image": [1, SIDE, SIDE], "channels": list(self.params.channels)}

    def split_key(self) -> list[str]:
        return ["image_id"]

    def default_suite(self, settings: Settings) -> dict[str, Any]:
        from keel.data.validation import expectation as rule

        columns = ["image_id", *PIXELS, LABEL]
        return {
            "name": "digits",
            "meta": {"notes": "keel's suite for a batch of 8x8 digit images: schema, pixel range, labels"},
            "expectations": [
                rule("expect_table_columns_to_match_ordered_list", "schema", column_list=columns),
                rule("expect_table_row_count_to_be_between", "at least one image", min_value=1),
                rule("expect_column_values_to_be_unique", "one row per image", column="image_id"),
                rule(
                    "expect_column_values_to_be_in_set",
                    "label is a digit",
                    column=LABEL,
                    value_set=list(range(10)),
                ),
                *[
                    rule(
                        "expect_column_values_to_be_between",
                        "pixel in 0..16",
                        column=p,
                        min_value=0,
                        max_value=16,
                    )
                    for p in PIXELS
                ],
            ],
        }

    # ---------------------------------------------------------------- data source
    def _count(self) -> int:
        return -(-1797 // self.params.batch_rows)  # scikit-learn ships 1797 images

    def batches(self) -> list[str]:
        return [f"chunk-{i + 1}" for i in range(self._count())]

    def demo_batches(self) -> list[str]:
        return self.batches()[: self.params.demo_batches]

    def build_batch(self, name: str, sample_rows: int) -> pd.DataFrame:
        return self.build_batches([name], sample_rows)[name]

    def build_batches(self, names: Sequence[str], sample_rows: int) -> dict[str, pd.DataFrame]:
        if not names:
            return {}
        images, size = digits_table(), self.params.batch_rows

        def rows(name: str) -> pd.DataFrame:
            start = (int(name.removeprefix("chunk-")) - 1) * size
            return images.iloc[start : start + size]

        return self.cut_batches(names, sample_rows, rows)


def digits_table() -> pd.DataFrame:
    """All 1797 bundled images as rows (no download: the data ships inside scikit-learn)."""
    import pandas as pd
    from sklearn.datasets import load_digits

    bunch = load_digits()
    frame = pd.DataFrame(bunch.data.astype("int64"), columns=PIXELS)
    frame.insert(0, "image_id", range(len(frame)))
    frame[LABEL] = bunch.target.astype("int64")
    return frame
