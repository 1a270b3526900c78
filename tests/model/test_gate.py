"""The gate's rules on hand-made metrics and slices (pure)."""

import pandas as pd
import pytest

from keel.config.settings import GateConfig, MetricRule
from keel.registry.gate import diff_card, evaluate_gate

CFG = GateConfig(
    metrics={
        "test/roc_auc": MetricRule(min=0.65, max_drop=0.01),
        "test/log_loss": MetricRule(max=0.6, max_rise=0.01),
    },
    slice_metric="roc_auc",
    slice_min_rows=100,
    slice_max_drop=0.05,
)


def _slices(ewr_auc, jfk_auc=0.70, jfk_rows=50):
    return pd.DataFrame(
        [
            {"slice": "origin", "value": "EWR", "roc_auc": ewr_auc, "rows": 500},
            {"slice": "origin", "value": "JFK", "roc_auc": jfk_auc, "rows": jfk_rows},
        ]
    )


def test_first_model_is_judged_on_floors_only():
    gate = evaluate_gate(CFG, {"test/roc_auc": 0.70, "test/log_loss": 0.5}, _slices(0.7))
    assert gate.passed and gate.status == "blessed" and len(gate.checks) == 2
    low = evaluate_gate(CFG, {"test/roc_auc": 0.60, "test/log_loss": 0.5}, _slices(0.7))
    assert not low.passed and [c.name for c in low.failures()] == ["test/roc_auc >= 0.65"]


def test_change_against_the_champion():
    base = {"test/roc_auc": 0.75, "test/log_loss": 0.50}
    ok = evaluate_gate(
        CFG, {"test/roc_auc": 0.745, "test/log_loss": 0.505}, _slices(0.7), "3", base, _slices(0.7)
    )
    assert ok.passed and ok.baseline_version == "3"
    worse = evaluate_gate(
        CFG, {"test/roc_auc": 0.73, "test/log_loss": 0.52}, _slices(0.7), "3", base, _slices(0.7)
    )
    assert {c.name for c in worse.failures()} == {
        "test/roc_auc drop vs champion <= 0.01",
        "test/log_loss rise vs champion <= 0.01",
    }
    assert "test/roc_auc drop" in worse.summary()


def test_slice_guard_counts_only_big_enough_slices():
    base = {"test/roc_auc": 0.75, "test/log_loss": 0.5}
    m = {"test/roc_auc": 0.75, "test/log_loss": 0.5}
    # JFK (50 rows < 100) collapses but is too small to count; EWR drops 0.10
    gate = evaluate_gate(CFG, m, _slices(0.60, jfk_auc=0.1), "3", base, _slices(0.70, jfk_auc=0.9))
    assert [c.name for c in gate.failures()] == ["slice origin=EWR roc_auc drop <= 0.05"]
    fine = evaluate_gate(CFG, m, _slices(0.68, jfk_auc=0.1), "3", base, _slices(0.70, jfk_auc=0.9))
    assert fine.passed


def test_missing_metric_fails_the_gate():
    gate = evaluate_gate(CFG, {"test/roc_auc": 0.8}, _slices(0.7))
    assert not gate.passed and gate.failures()[0].name == "test/log_loss is measured"


def test_diff_card_shows_params_data_metrics_and_slices():
    base = {"test/roc_auc": 0.75, "test/log_loss": 0.5}
    new = {"test/roc_auc": 0.76, "test/log_loss": 0.49}
    gate = evaluate_gate(CFG, new, _slices(0.72), "3", base, _slices(0.70))
    card = diff_card(
        "m",
        {"version": "4", "data_version": "bbb.dir", "params": {"train.lr": "0.01", "x": "1"}, "metrics": new},
        {
            "version": "3",
            "data_version": "aaa.dir",
            "params": {"train.lr": "0.005", "x": "1"},
            "metrics": base,
        },
        gate,
        _slices(0.72),
        _slices(0.70),
        "roc_auc",
    )
    assert "BLESSED" in card and "| train.lr | 0.005 | 0.01 |" in card and "| x |" not in card
    assert "aaa.dir" in card and "bbb.dir" in card
    assert "| test/roc_auc | 0.7500 | 0.7600 | +0.0100 |" in card
    assert "| origin=EWR | 500 | 0.7000 | 0.7200 | +0.0200 |" in card


def test_slice_guard_honours_a_lower_is_better_metric_and_a_metric_it_cannot_see():
    cfg = CFG.model_copy(update={"metrics": {}, "slice_metric": "rmse"})

    def rmse(ewr):
        return pd.DataFrame([{"slice": "origin", "value": "EWR", "rmse": ewr, "rows": 500}])

    # rmse going up by 0.10 is the slice getting worse; going down is fine
    worse = evaluate_gate(cfg, {}, rmse(1.10), "3", {}, rmse(1.00))
    assert [c.name for c in worse.failures()] == ["slice origin=EWR rmse rise <= 0.05"]
    assert worse.failures()[0].value == pytest.approx(0.10)
    assert evaluate_gate(cfg, {}, rmse(0.80), "3", {}, rmse(1.00)).passed
    # a slice metric the objective does not compute fails the gate instead of passing silently
    blind = evaluate_gate(CFG.model_copy(update={"metrics": {}}), {}, rmse(1.0), "3", {}, rmse(1.0))
    assert [c.name for c in blind.failures()] == ["slice metric roc_auc is measured"]


def test_slice_gap_is_the_headline_metrics_largest_gap_and_the_gate_can_bound_it():
    import numpy as np

    from keel.model.direction import higher_is_better
    from keel.model.evaluation import slice_gaps, slice_table
    from keel.model.objectives import Binary

    rng = np.random.default_rng(0)
    n = 400
    group = np.array(["a"] * 200 + ["b"] * 190 + ["tiny"] * 10)
    y = rng.integers(0, 2, n)
    # group a: scores follow the label; group b: noise; tiny: perfectly wrong (too few rows to count)
    p = np.where(group == "a", 0.25 + 0.5 * y, rng.random(n))
    p = np.where(group == "tiny", 1.0 - y, p)
    frame = pd.DataFrame({"g": group, "one": "x"})
    out = pd.DataFrame({"delayed": (p >= 0.5).astype(int), "probability": p})
    objective = Binary("delayed", [0, 1])
    slices = slice_table(frame, pd.Series(y), out, objective, ["g", "one"])
    gaps = slice_gaps(slices, "roc_auc", min_rows=30)
    auc = slices.set_index("value")["roc_auc"]
    assert gaps["slice_gap/g"] == pytest.approx(auc["a"] - auc["b"]) and gaps["slice_gap/g"] > 0.3
    assert np.isnan(gaps["slice_gap/one"])  # one value: no gap
    assert slice_gaps(slices, "roc_auc", min_rows=5)["slice_gap/g"] == pytest.approx(auc["a"] - auc["tiny"])

    assert not higher_is_better("test/slice_gap/g") and higher_is_better("test/roc_auc")
    cfg = GateConfig(
        metrics={"test/slice_gap/g": MetricRule(max=0.2)}, slice_metric="", slice_min_rows=0, slice_max_drop=0
    )
    metrics = {f"test/{k}": v for k, v in gaps.items()}
    gate = evaluate_gate(cfg, metrics, slices)
    assert not gate.passed and any("test/slice_gap/g" in c.name and not c.passed for c in gate.checks)
    assert evaluate_gate(cfg, {"test/slice_gap/g": 0.1}, slices).passed


def test_a_gate_with_zero_rules_never_blesses():
    bare = CFG.model_copy(update={"metrics": {}, "slice_min_rows": 0})
    for baseline in (None, "3"):
        gate = evaluate_gate(bare, {"test/roc_auc": 0.99}, _slices(0.9), baseline, {"test/roc_auc": 0.5})
        assert not gate.passed and gate.checks == [] and "no gate rules" in gate.summary()


@pytest.mark.parametrize(
    "kind, metric, worse",
    [
        ("binary", "test/roc_auc", "drop"),
        ("multiclass", "test/accuracy", "drop"),
        ("regression", "test/rmse", "rise"),
        ("tokens", "test/entity_f1", "drop"),
    ],
)
def test_the_objectives_default_rejects_a_worse_challenger_on_the_same_rows(kind, metric, worse):
    from keel.model.objectives import KINDS
    from keel.registry.gate import objective_default

    objective = KINDS[kind]
    rules, said = objective_default(objective, CFG.model_copy(update={"metrics": {}, "slice_min_rows": 0}))
    assert list(rules.metrics) == [metric]
    assert metric in said and kind in said
    champion = {metric: 0.80}
    better, poorer = (0.85, 0.75) if worse == "drop" else (0.75, 0.85)
    assert evaluate_gate(rules, {metric: better}, pd.DataFrame(), "3", champion).passed
    rejected = evaluate_gate(rules, {metric: poorer}, pd.DataFrame(), "3", champion)
    assert [c.name for c in rejected.failures()] == [f"{metric} {worse} vs champion <= 0"]
    first = evaluate_gate(rules, {metric: poorer}, pd.DataFrame())  # no champion yet
    assert first.passed and first.checks[0].name.startswith("first version")
    unmeasured = evaluate_gate(rules, {}, pd.DataFrame(), "3", champion)
    assert not unmeasured.passed
