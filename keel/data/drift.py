"""Data drift between a reference (the champion's training data) and a new batch,
with scipy's tests: KS per numeric feature, chi-square per categorical one, plus the
effect size, so that large samples do not flag trivial shifts. Pure.

What is compared (``project``): the table's feature columns as they are; a text
column through a projection that means something for it (characters, tokens, the share
of words the model's vocabulary lacks, and the first principal components of the
champion's sentence embeddings, fitted on the reference); and, when asked, what the
champion predicts on both (the predicted-label mix, or the predicted value)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    test: str  # "ks" | "chi2"
    statistic: float  # KS D, or chi-square
    effect: float  # KS D, or Cramér's V
    p_value: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    features: list[FeatureDrift]
    share: float  # fraction of features that drifted
    threshold: float
    reference_rows: int
    current_rows: int
    drifted: bool = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "drifted", self.share >= self.threshold)

    def table(self) -> list[dict]:
        return [
            {
                **asdict(f),
                "statistic": round(f.statistic, 4),
                "effect": round(f.effect, 4),
                "p_value": float(f"{f.p_value:.3g}"),
            }
            for f in self.features
        ]

    def metrics(self) -> dict[str, float]:
        out = {"drift/share": self.share}
        for f in self.features:
            out[f"drift/{f.feature}/effect"] = f.effect
            out[f"drift/{f.feature}/p_value"] = f.p_value
        return out


EMBEDDING_ROWS = 512  # rows of each side embedded (a deterministic sample): bounded CPU time
COMPONENTS = 3


def _sample(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    return frame.sample(n=rows, random_state=0) if len(frame) > rows else frame


def _embeddings(model: Any, frame: pd.DataFrame) -> np.ndarray:
    import torch

    a, b = model.preprocessor.transform(frame)
    with torch.no_grad():
        net = model.net
        chunk = getattr(net, "chunk_rows", 0) or len(a)
        parts = [
            net.embed(torch.from_numpy(a[i : i + chunk]), torch.from_numpy(b[i : i + chunk]))
            for i in range(0, len(a), chunk)
        ]
    return torch.cat(parts).numpy().astype(np.float64)


def project(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    text: Sequence[str] = (),
    model: Any = None,
    predictions: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """(reference view, current view, categorical columns, numeric columns) to compare.
    ``model``: the champion's loaded pyfunc (keel.model.runtime.pyfunc), needed for text columns and
    for ``predictions``."""
    views = [
        reference[[*categorical, *numeric]].reset_index(drop=True),
        current[[*categorical, *numeric]].reset_index(drop=True),
    ]
    cat, num = list(categorical), list(numeric)
    pre = getattr(model, "preprocessor", None)
    if text and pre is not None and hasattr(pre, "projection"):
        parts = [pre.projection(f) for f in (reference, current)]
        views = [pd.concat([v, p], axis=1) for v, p in zip(views, parts, strict=True)]
        num += list(parts[0].columns)
        if hasattr(getattr(model, "net", None), "embed"):  # an eager net (an ONNX variant has none)
            ref_e = _embeddings(model, _sample(reference, EMBEDDING_ROWS))
            cur_e = _embeddings(model, _sample(current, EMBEDDING_ROWS))
            mean = ref_e.mean(axis=0)
            _, _, vt = np.linalg.svd(ref_e - mean, full_matrices=False)
            names = [f"{text[0]}/embedding_pc{i + 1}" for i in range(min(COMPONENTS, len(vt)))]
            for view, e in zip(views, (ref_e, cur_e), strict=True):
                pcs = (e - mean) @ vt[: len(names)].T
                for j, name in enumerate(names):  # shorter than the view: NaN rows, dropped by the test
                    view[name] = pd.Series(pcs[:, j])
            num += names
    if predictions and model is not None:
        objective = model.objective
        regression = objective.kind == "regression"
        output = "prediction" if regression else objective.label
        columns = pre.columns if pre is not None else [*categorical, *numeric]
        for view, frame in zip(views, (reference, current), strict=True):
            out = model.predict(None, frame[columns].reset_index(drop=True))[output]
            view[f"predicted/{output}"] = out.to_numpy() if regression else out.astype(str).to_numpy()
        (num if regression else cat).append(f"predicted/{output}")
    return views[0], views[1], cat, num


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    alpha: float,
    min_effect: float,
    share_threshold: float,
) -> DriftReport:
    from scipy import stats
    from scipy.stats.contingency import association

    out: list[FeatureDrift] = []
    for col in numeric:
        a, b = reference[col].dropna().to_numpy(), current[col].dropna().to_numpy()
        if len(a) == 0 or len(b) == 0:
            out.append(FeatureDrift(col, "ks", float("nan"), 1.0, 0.0, True))  # all missing now
            continue
        res = stats.ks_2samp(a, b)
        out.append(
            FeatureDrift(
                col,
                "ks",
                float(res.statistic),
                float(res.statistic),
                float(res.pvalue),
                bool(res.pvalue < alpha and res.statistic >= min_effect),
            )
        )
    for col in categorical:
        a, b = reference[col].astype(str).value_counts(), current[col].astype(str).value_counts()
        table = pd.concat([a, b], axis=1).fillna(0).to_numpy().T
        if table.shape[1] < 2:
            out.append(FeatureDrift(col, "chi2", 0.0, 0.0, 1.0, False))
            continue
        chi2, p, _, _ = stats.chi2_contingency(table)
        effect = float(association(table.astype(np.int64), method="cramer"))
        out.append(
            FeatureDrift(col, "chi2", float(chi2), effect, float(p), bool(p < alpha and effect >= min_effect))
        )
    share = sum(f.drifted for f in out) / len(out) if out else 0.0
    return DriftReport(out, share, share_threshold, len(reference), len(current))


def plot(report: DriftReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = sorted(report.features, key=lambda f: f.effect)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(feats) + 1.2), dpi=100)
    ax.barh(
        [f.feature for f in feats],
        [f.effect for f in feats],
        color=["tab:red" if f.drifted else "tab:gray" for f in feats],
    )
    ax.set_xlabel("effect size (KS D / Cramér's V); red = drifted")
    ax.set_title(f"drift share {report.share:.2f} (threshold {report.threshold:.2f})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
