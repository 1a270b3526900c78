"""Data drift between a reference (the champion's training data) and a new batch,
with scipy's tests: KS per numeric feature, chi-square per categorical one, plus the
effect size, so that large samples do not flag trivial shifts. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

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
