"""Objectives: label encoding (strings included), output columns, library metrics and
metric directions, for binary, multiclass and regression."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from keel.model.direction import higher_is_better
from keel.model.objectives import Binary, Multiclass, Regression, from_dict


def test_metric_directions():
    assert higher_is_better("test/roc_auc") and higher_is_better("accuracy") and higher_is_better("val/r2")
    assert not higher_is_better("test/log_loss") and not higher_is_better("rmse")
    assert not higher_is_better("test/mae")


def test_binary_keeps_0_1_labels_and_maps_two_strings():
    numeric = Binary.fit_labels("delayed", pd.Series([0, 1, 1, 0]))
    assert numeric.classes == [0, 1] and numeric.width == 1
    out = numeric.predict(torch.tensor([[-2.0], [0.5], [3.0]]), threshold=0.6)
    assert list(out.columns) == ["probability", "delayed"]
    assert out["delayed"].tolist() == [0, 1, 1] and out["delayed"].dtype == np.int64

    words = Binary.fit_labels("device", pd.Series(["iphone", "android", "iphone"]))
    assert words.classes == ["android", "iphone"]
    assert words.encode(pd.Series(["iphone", "android"])).tolist() == [1.0, 0.0]
    out = words.predict(torch.tensor([[-1.0], [1.0]]))
    assert out["device"].tolist() == ["android", "iphone"]
    m = words.metrics(pd.Series(["android", "iphone"]), out)
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0
    with pytest.raises(ValueError, match="label 'device': a binary objective needs 2 values, found 3"):
        Binary.fit_labels("device", pd.Series(["a", "b", "c"]))


def test_multiclass_outputs_a_probability_per_class_and_library_metrics():
    obj = Multiclass.fit_labels("species", pd.Series(["b", "a", "c", "a"]))
    assert obj.classes == ["a", "b", "c"] and obj.width == 3
    raw = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    out = obj.predict(raw)
    assert list(out.columns) == ["p_a", "p_b", "p_c", "species"]
    assert np.allclose(out[["p_a", "p_b", "p_c"]].sum(axis=1), 1.0)
    y = pd.Series(["a", "b", "c", "a"])
    m = obj.metrics(y, out)
    assert m["accuracy"] == 0.75
    codes = np.array([0, 1, 2, 0])
    expect = skm.log_loss(codes, out[["p_a", "p_b", "p_c"]].to_numpy(), labels=[0, 1, 2])
    assert m["log_loss"] == pytest.approx(expect)
    assert obj.encode(pd.Series(["z"])).tolist() == [-1]  # an unseen class has no code
    digits = Multiclass.fit_labels("digit", pd.Series([3, 1, 2]))
    assert digits.predict(torch.tensor([[0.0, 5.0, 0.0]]))["digit"].tolist() == [2]


def test_regression_standardises_the_label_and_predicts_in_its_units():
    y = pd.Series([10.0, 20.0, 30.0])
    obj = Regression.fit_labels("price", y)
    assert obj.mean == 20.0 and obj.encode(y).tolist() == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
    out = obj.predict(torch.tensor(obj.encode(y)).reshape(-1, 1))
    assert list(out.columns) == ["prediction"] and out["prediction"].tolist() == pytest.approx([10, 20, 30])
    m = obj.metrics(y, out)
    assert m["rmse"] == pytest.approx(0.0, abs=1e-5) and m["r2"] == pytest.approx(1.0)
    again = from_dict(obj.to_dict())
    assert isinstance(again, Regression) and (again.mean, again.std) == (obj.mean, obj.std)


def _synthetic(n=1200, seed=0):
    """A learnable table: the class is decided by x1 (and the colour), the value by x1 + x2."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    cls = np.where(x1 < -0.5, "low", np.where(x1 > 0.5, "high", "mid"))
    return pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "kind": cls, "value": 3 * x1 + x2 + 10})


@pytest.mark.parametrize(
    ("objective", "label", "columns", "metric", "bound"),
    [
        ("multiclass", "kind", ["p_high", "p_low", "p_mid", "kind"], "accuracy", 0.8),
        ("regression", "value", ["prediction"], "r2", 0.8),
    ],
)
def test_fit_and_the_registered_model_serve_each_objective(
    tmp_path, objective, label, columns, metric, bound
):
    import mlflow.pyfunc

    from keel.config.settings import FeatureConfig, load_settings
    from keel.model.runtime.pyfunc import TabularModel, save_artifacts
    from keel.model.training import fit

    frame = _synthetic()
    train, val, test = frame.iloc[:800], frame.iloc[800:1000], frame.iloc[1000:]
    features = FeatureConfig(label=label, categorical=["colour"], numeric=["x1", "x2"], slices=["colour"])
    cfg = load_settings(tmp_path, environ={}).train.model_copy(
        update={"max_epochs": 15, "batch_size": 64, "hidden": [16], "patience": 15}
    )
    model = fit(train, val, features, cfg, objective=objective)
    out = model.predict(test)
    assert list(out.columns) == columns
    assert model.objective.metrics(test[label], out)[metric] > bound

    artifacts = save_artifacts(
        model.family, model.preprocessor, model.net, model.threshold, tmp_path / "a", model.objective
    )
    mlflow.pyfunc.save_model(str(tmp_path / "m"), python_model=TabularModel(), artifacts=artifacts)
    served = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(test[["x1", "x2", "colour"]])
    pd.testing.assert_frame_equal(served, out)
