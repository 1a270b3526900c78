"""The promotion gate ("blessing"): a challenger against absolute floors and against
the champion, evaluated on the same held-out rows; plus the diff card. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeGuard

import pandas as pd

from keel.config.settings import GateConfig
from keel.model.direction import higher_is_better

# The ``promotion`` tag value of a blessed version held for a reviewer (set by the policy in
# tasks/gate.py, read by keel status's list of reviews waiting).
AWAITING = "awaiting review"


@dataclass(frozen=True)
class Check:
    name: str  # e.g. "test/roc_auc >= 0.65", "slice origin=EWR roc_auc drop <= 0.05"
    value: float
    limit: float
    passed: bool
    baseline: float | None = None


@dataclass(frozen=True)
class GateResult:
    passed: bool
    baseline_version: str | None  # the champion it was compared with; None: no champion yet
    checks: list[Check] = field(default_factory=list)
    # the rows compared: {"scheme", "batches", "rows", "note", "champion_trained_on_it"}
    holdout: dict[str, Any] = field(default_factory=dict)
    rules_from: str = ""  # where the rules came from: a settings layer, or the objective's default

    @property
    def status(self) -> str:
        return "blessed" if self.passed else "rejected"

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        if not self.checks:
            return "rejected: no gate rules (a gate with none never blesses)"
        if self.passed:
            return f"blessed: {len(self.checks)} checks passed"
        return "rejected: " + "; ".join(f"{c.name} (got {c.value:.4f})" for c in self.failures())

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "baseline_version": self.baseline_version,
            "holdout": self.holdout,
            "checks": [asdict(c) for c in self.checks],
            "rules_from": self.rules_from,
        }


def _ok(x: float | None) -> TypeGuard[float]:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def evaluate_gate(
    cfg: GateConfig,
    metrics: Mapping[str, float],
    slices: pd.DataFrame,
    baseline_version: str | None = None,
    baseline_metrics: Mapping[str, float] | None = None,
    baseline_slices: pd.DataFrame | None = None,
    against: str = "champion",  # what the baseline is, in the checks' names (compress: "v<N>")
) -> GateResult:
    checks: list[Check] = []
    for name, rule in cfg.metrics.items():
        value = metrics.get(name)
        if not _ok(value):
            checks.append(Check(f"{name} is measured", float("nan"), 0.0, False))
            continue
        base = (baseline_metrics or {}).get(name)
        if rule.min is not None:
            checks.append(Check(f"{name} >= {rule.min:g}", value, rule.min, value >= rule.min))
        if rule.max is not None:
            checks.append(Check(f"{name} <= {rule.max:g}", value, rule.max, value <= rule.max))
        if _ok(base) and rule.max_drop is not None:
            checks.append(
                Check(
                    f"{name} drop vs {against} <= {rule.max_drop:g}",
                    base - value,
                    rule.max_drop,
                    base - value <= rule.max_drop,
                    base,
                )
            )
        if _ok(base) and rule.max_rise is not None:
            checks.append(
                Check(
                    f"{name} rise vs {against} <= {rule.max_rise:g}",
                    value - base,
                    rule.max_rise,
                    value - base <= rule.max_rise,
                    base,
                )
            )
    if cfg.slice_min_rows > 0 and baseline_slices is not None and len(slices):
        joined = slices.merge(baseline_slices, on=["slice", "value"], suffixes=("", "_base"))
        metric = cfg.slice_metric
        # how much worse the slice got: a fall for higher-is-better metrics, a rise for
        # lower-is-better ones (log_loss, rmse...)
        sign, worse = (1.0, "drop") if higher_is_better(metric) else (-1.0, "rise")
        if metric not in slices.columns:
            checks.append(Check(f"slice metric {metric} is measured", float("nan"), 0.0, False))
        for row in joined.itertuples(index=False) if metric in slices.columns else ():
            r = row._asdict()
            if r["rows"] < cfg.slice_min_rows:
                continue
            if not (_ok(r[metric]) and _ok(r[f"{metric}_base"])):
                continue
            drop = sign * (r[f"{metric}_base"] - r[metric])
            checks.append(
                Check(
                    f"slice {r['slice']}={r['value']} {metric} {worse} <= {cfg.slice_max_drop:g}",
                    drop,
                    cfg.slice_max_drop,
                    drop <= cfg.slice_max_drop,
                    r[f"{metric}_base"],
                )
            )
    if not cfg.metrics and cfg.slice_min_rows <= 0:  # a gate with no rules never blesses
        return GateResult(False, baseline_version, [])
    if not checks and baseline_version is None:  # only rules against a champion, and none yet
        checks.append(Check(f"first version: no {against} to compare with yet", 0.0, 0.0, True))
    if not checks:  # rules, but none could be evaluated: not a blessing
        checks.append(Check(f"a rule evaluated against {against}", float("nan"), 0.0, False))
    return GateResult(all(c.passed for c in checks), baseline_version, checks)


def objective_default(objective: Any, rules: GateConfig) -> tuple[GateConfig, str]:
    """The gate when no settings layer brings rules, and where it comes from: the challenger
    may not be worse than the champion on the objective's headline metric (binary roc_auc,
    multiclass accuracy, regression rmse, tokens entity_f1), on the same rows."""
    from keel.config.settings import MetricRule

    metric = f"test/{objective.headline}"
    if higher_is_better(metric):
        rule, worse = MetricRule(max_drop=0.0), "fall"
    else:
        rule, worse = MetricRule(max_rise=0.0), "rise"
    said = f"the {objective.kind} objective's default: {metric} may not {worse} against the champion"
    return rules.model_copy(update={"metrics": {metric: rule}}), said


def diff_card(
    name: str,
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    gate: GateResult,
    slices: pd.DataFrame,
    baseline_slices: pd.DataFrame | None,
    slice_metric: str,
    relies_on: tuple[str, pd.DataFrame, pd.DataFrame | None] | None = None,
) -> str:
    """Markdown: params that differ, data versions, metric deltas, slice deltas, what the
    model relies on beside the champion (``relies_on``: method, the challenger's importance
    table, the champion's or None; keel.model.explain), checks.
    ``challenger``/``champion``: {"version", "data_version", "params", "metrics"}."""
    ch = challenger
    lines = [
        f"# {name} v{ch['version']} vs champion "
        f"{'v' + str(champion['version']) if champion else '(none)'}: **{gate.status.upper()}**",
        "",
    ]
    lines += [
        "## Data versions",
        "",
        f"- challenger: `{ch['data_version']}`",
        f"- champion: `{champion['data_version']}`" if champion else "- champion: none",
        "",
    ]
    if champion:
        keys = sorted(set(ch["params"]) | set(champion["params"]))
        differ = [k for k in keys if ch["params"].get(k) != champion["params"].get(k)]
        lines += ["## Params that differ", ""]
        lines += (
            (
                ["| param | champion | challenger |", "|---|---|---|"]
                + [f"| {k} | {champion['params'].get(k, '—')} | {ch['params'].get(k, '—')} |" for k in differ]
            )
            if differ
            else ["(none)"]
        )
        lines.append("")
    lines += ["## Metrics (same held-out rows)", ""]
    if gate.holdout:
        h = gate.holdout
        where = (
            f"every row of the newest batch {', '.join(h['batches'])}, newer than the challenger's data"
            if h["scheme"] == "newest"
            else "a stable hash share of every batch"
        )
        lines += [f"Holdout: {h['rows']} rows, {where}." + (f" {h['note']}." if h.get("note") else "")]
        if h.get("champion_trained_on_it"):
            lines += ["**The champion trained on rows of this batch: its metrics here are in-sample.**"]
        lines.append("")
    lines += [
        "| metric | champion | challenger | delta |",
        "|---|---|---|---|",
    ]
    for k in sorted(ch["metrics"]):
        if not k.startswith("test/") or k.endswith(("/rows", "/positive_rate")):
            continue
        new, old = ch["metrics"][k], (champion or {}).get("metrics", {}).get(k)
        lines.append(
            f"| {k} | {old:.4f} | {new:.4f} | {new - old:+.4f} |"
            if _ok(old)
            else f"| {k} | — | {new:.4f} | |"
        )
    if baseline_slices is not None and len(slices):
        joined = slices.merge(baseline_slices, on=["slice", "value"], suffixes=("", "_base"))
        lines += [
            "",
            f"## Slice deltas ({slice_metric})",
            "",
            "| slice | rows | champion | challenger | delta |",
            "|---|---|---|---|---|",
        ]
        for r in joined.to_dict("records"):
            a, b = r[f"{slice_metric}_base"], r[slice_metric]
            if _ok(a) and _ok(b):
                lines.append(
                    f"| {r['slice']}={r['value']} | {int(r['rows'])} | {a:.4f} | {b:.4f} | {b - a:+.4f} |"
                )
    if relies_on is not None:
        lines += ["", *_relies_on_table(*relies_on)]
    lines += ["", "## Gate checks", "", "| check | value | limit | passed |", "|---|---|---|---|"]
    lines += [
        f"| {c.name} | {c.value:.4f} | {c.limit:g} | {'yes' if c.passed else '**no**'} |" for c in gate.checks
    ]
    return "\n".join(lines) + "\n"


def _relies_on_table(
    method: str, ours: pd.DataFrame, theirs: pd.DataFrame | None, top: int = 10
) -> list[str]:
    """The challenger's ``top`` features (or tokens, pixels) by importance beside the
    champion's importance and rank for the same feature (explain/importance.csv)."""
    lines = [f"## What the model relies on ({method}, explain/importance.csv)", ""]
    if theirs is None:
        lines.append(
            "The champion logged no explanation (none yet, or trained before keel explained models)."
        )
        lines.append("")
    ranks = {} if theirs is None else {str(f): i + 1 for i, f in enumerate(theirs["feature"])}
    values = (
        {} if theirs is None else dict(zip(theirs["feature"].astype(str), theirs["importance"], strict=True))
    )
    lines += ["| rank | feature | challenger | champion | champion rank |", "|---|---|---|---|---|"]
    for i, row in enumerate(ours.head(top).to_dict("records")):
        name = str(row["feature"])
        old = values.get(name)
        lines.append(
            f"| {i + 1} | {name} | {row['importance']:.4f} | "
            + (f"{old:.4f} | {ranks[name]} |" if old is not None else "— | — |")
        )
    return lines


@dataclass(frozen=True)
class Baseline:
    """The champion, as loaded from the registry and scored on the challenger's test rows."""

    version: str
    data_version: str
    params: dict[str, str]
    metrics: dict[str, float]
    slices: pd.DataFrame
    partitions: tuple[str, ...] = ()  # the batches it trained on
    run_id: str = ""  # its training run (its explain/ artifacts)
