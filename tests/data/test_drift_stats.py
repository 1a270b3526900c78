"""Drift statistics on generated frames (pure)."""

import numpy as np
import pandas as pd

from keel.data.drift import compare


def _frame(n, seed, temp_shift=0.0, carrier_p=(0.5, 0.3, 0.2)):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"temp": rng.normal(40 + temp_shift, 10, n),
                         "carrier": rng.choice(["UA", "AA", "B6"], n, p=carrier_p)})


def test_same_distribution_does_not_drift():
    r = compare(_frame(5000, 1), _frame(5000, 2), ["carrier"], ["temp"], 0.01, 0.1, 0.5)
    assert r.share == 0.0 and not r.drifted and r.reference_rows == r.current_rows == 5000


def test_numeric_and_categorical_shifts_are_named():
    r = compare(_frame(5000, 1), _frame(5000, 2, temp_shift=15, carrier_p=(0.1, 0.2, 0.7)),
                ["carrier"], ["temp"], 0.01, 0.1, 0.5)
    by = {f.feature: f for f in r.features}
    assert by["temp"].test == "ks" and by["temp"].drifted and by["temp"].effect > 0.4
    assert by["carrier"].test == "chi2" and by["carrier"].drifted and by["carrier"].p_value < 1e-6
    assert r.share == 1.0 and r.drifted
    assert r.metrics()["drift/share"] == 1.0 and "drift/temp/effect" in r.metrics()


def test_large_samples_need_an_effect_not_just_a_p_value():
    # 200k rows make a 0.5-degree shift "significant"; its effect is far below the floor
    r = compare(_frame(200_000, 1), _frame(200_000, 2, temp_shift=0.5), ["carrier"], ["temp"],
                0.01, 0.1, 0.5)
    temp = next(f for f in r.features if f.feature == "temp")
    assert temp.p_value < 0.01 and temp.effect < 0.1 and not temp.drifted
