"""Model behaviour: preprocessing, determinism, the pyfunc round trip, evaluation."""

import numpy as np
import pandas as pd
import pytest
import torch

from keel.config.settings import load_settings
from keel.model.features import Preprocessor
from keel.workloads.flights.data import split_frame


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(tmp_path_factory.mktemp("ws"), profile="test", environ={})


@pytest.fixture(scope="module")
def splits(month_frame, settings):
    return split_frame(month_frame, settings.split.val_pct, settings.split.test_pct, settings.split.salt)


def test_preprocessor_handles_unknown_categories_and_missing_numbers(month_frame, settings):
    f = settings.features
    pre = Preprocessor.fit(month_frame, f.categorical, f.numeric)
    rows = month_frame.head(2).copy()
    rows.loc[rows.index[0], "carrier"] = "never-seen"
    rows.loc[rows.index[0], "pressure"] = np.nan
    cat, num = pre.transform(rows)
    assert cat.shape == (2, len(f.categorical)) and num.shape == (2, 2 * len(f.numeric))
    assert cat[0, f.categorical.index("carrier")] == 0  # unknown bucket
    assert cat[1].min() >= 1  # known values
    i = f.numeric.index("pressure")
    assert num[0, i] == 0.0 and num[0, len(f.numeric) + i] == 1.0  # imputed + flagged
    assert Preprocessor.from_dict(pre.to_dict()) == pre


def test_training_is_deterministic_on_cpu(splits, settings):
    from keel.model.training import fit

    train, val, _ = splits
    a = fit(train, val, settings.features, settings.train)
    b = fit(train, val, settings.features, settings.train)
    for (ka, va), (kb, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert a.threshold == b.threshold


@pytest.mark.slow
def test_model_beats_chance_on_held_out_rows(splits, settings):
    from sklearn.metrics import roc_auc_score

    from keel.model.training import fit

    train, val, test = splits
    cfg = settings.train.model_copy(update={"max_epochs": 8, "limit_train_batches": 1.0})
    model = fit(train, val, settings.features, cfg)
    auc = roc_auc_score(test["delayed"], model.predict_proba(test))
    assert auc > 0.6, auc


def test_pyfunc_round_trip_predicts_from_raw_rows(splits, settings, tmp_path):
    import mlflow.pyfunc

    from keel.model.runtime.pyfunc import TabularModel, save_artifacts
    from keel.model.training import fit

    train, val, test = splits
    model = fit(train, val, settings.features, settings.train)
    artifacts = save_artifacts(
        model.family, model.preprocessor, model.net, model.threshold, tmp_path / "a", model.objective
    )
    mlflow.pyfunc.save_model(
        str(tmp_path / "m"), python_model=TabularModel(), artifacts=artifacts, pip_requirements=["mlflow"]
    )
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    raw = test[model.preprocessor.columns].head(50)
    out = loaded.predict(raw)
    assert list(out.columns) == ["probability", "delayed"] and len(out) == 50
    np.testing.assert_allclose(out["probability"].to_numpy(), model.predict_proba(raw), rtol=1e-6)
    assert ((out["probability"] >= model.threshold).astype(int) == out["delayed"]).all()
    pd.testing.assert_frame_equal(out, model.predict(raw))  # the registered model answers as trained


def test_classification_metrics_come_from_sklearn_definitions():
    from sklearn.metrics import f1_score, roc_auc_score

    from keel.model.evaluation import slice_table
    from keel.model.objectives import Binary, classification_metrics

    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.6, 0.7, 0.4, 0.9, 0.2])
    m = classification_metrics(y, p, 0.5)
    assert m["f1"] == pytest.approx(f1_score(y, p >= 0.5))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["accuracy"] == pytest.approx(4 / 6)
    binary = Binary("delayed", [0, 1])
    out = pd.DataFrame({"probability": p, "delayed": (p >= 0.5).astype(int)})
    assert binary.metrics(pd.Series(y), out) == m
    table = slice_table(pd.DataFrame({"origin": list("AABBBA")}), pd.Series(y), out, binary, ["origin"])
    assert list(table["value"]) == ["A", "B"] and list(table["rows"]) == [3, 3]
    assert table.set_index("value").loc["A", "accuracy"] == pytest.approx(2 / 3)
    # a value a suite allowed to be missing is a slice of its own (as a string column or not)
    for column in (pd.Series(["A", None, "B", "B", None, "A"], dtype="string"), [1.0, None, 2, 2, None, 1]):
        gaps = slice_table(pd.DataFrame({"origin": column}), pd.Series(y), out, binary, ["origin"])
        assert list(gaps["rows"]) == [2, 2, 2] and "(missing)" in set(gaps["value"])


def test_max_f1_threshold_beats_the_default_on_imbalanced_scores():
    from sklearn.metrics import f1_score

    from keel.model.training import max_f1_threshold

    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.25).astype(int)
    p = np.clip(0.2 + 0.15 * y + rng.normal(0, 0.1, 2000), 0, 1)
    t = max_f1_threshold(y, p)
    assert f1_score(y, p >= t) > f1_score(y, p >= 0.5)


def test_small_and_large_frames_encode_identically(month_frame, settings):
    """Online requests take a dict path, batches a vectorised one: same codes."""
    from keel.model import features

    f = settings.features
    pre = Preprocessor.fit(month_frame.iloc[:2000], f.categorical, f.numeric)
    rest = month_frame.iloc[2000:].copy()
    rest.loc[rest.index[:3], "dest"] = "NEW"  # unknown to the vocabulary
    whole = pre.encode_categorical(rest)
    assert len(rest) > features.SMALL_FRAME
    pieces = np.concatenate([pre.encode_categorical(rest.iloc[i : i + 10]) for i in range(0, len(rest), 10)])
    np.testing.assert_array_equal(whole, pieces)
    assert (whole[:3, f.categorical.index("dest")] == 0).all()


def test_conv_net_reads_the_pixels_as_an_image_and_rebuilds_from_its_config():
    from keel.model.families import build
    from keel.model.families.conv import ConvNet
    from keel.model.net import NetConfig

    cfg = NetConfig([], 2 * 64, [32], 0.0, 4, 10, arch="conv", image=[1, 8, 8], channels=[8, 16])
    net = build(cfg)
    assert isinstance(net, ConvNet) and any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    num = torch.randn(5, 128)
    out = net(torch.zeros((5, 0), dtype=torch.int64), num)
    assert out.shape == (5, 10)
    again = build(NetConfig(**cfg.to_dict()))  # what the pyfunc does with net.json
    again.load_state_dict(net.state_dict())
    net.eval(), again.eval()
    assert torch.equal(
        net(torch.zeros((5, 0), dtype=torch.int64), num), again(torch.zeros((5, 0)).long(), num)
    )
    # a pixel moved changes the output: the conv sees positions, not a bag of columns
    no_cat = torch.zeros((5, 0), dtype=torch.int64)
    moved = num.clone()
    moved[:, [0, 9]] = moved[:, [9, 0]]
    assert not torch.allclose(net(no_cat, moved), net(no_cat, num))
    with pytest.raises(ValueError, match="63 numeric columns for a 1x8x8 image"):
        build(NetConfig([], 2 * 63, [32], 0.0, 4, 10, arch="conv", image=[1, 8, 8], channels=[8]))
