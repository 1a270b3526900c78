"""keel.model.explain on real keel networks (untrained or hand-set, no training run): the method
each network gets, gradient saliency per pixel for the conv net, integrated gradients per
token for a BERT text model from the installed checkpoint, feature ablation per column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from keel.model import explain
from keel.model.families import build, family
from keel.model.features import Preprocessor
from keel.model.net import NetConfig
from keel.model.objectives import Binary, Multiclass, Regression

PIXELS = [f"p{i}" for i in range(16)]


def _images(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.random((n, 16)), columns=PIXELS)


def test_conv_saliency_is_per_pixel_and_the_image_map_is_drawn(tmp_path):
    frame = _images()
    pre = Preprocessor.fit(frame, [], PIXELS)
    torch.manual_seed(0)
    net = build(NetConfig([], pre.numeric_width, [8], 0.0, 4, 3, "conv", [1, 4, 4], [4, 4])).eval()
    objective = Multiclass("digit", ["0", "1", "2"])
    assert explain.method_for(family("conv"), net) == "saliency"
    per_record = explain.attribute(family("conv"), pre, net, objective, frame.head(2))
    assert len(per_record) == 2 and list(per_record[0]["attributions"]) == PIXELS
    assert per_record[0]["explains"].startswith("logit of digit=")
    assert all(v >= 0 for v in per_record[0]["attributions"].values())  # |gradient|
    table = explain.global_importance(
        family("conv"), pre, net, objective, lambda f: f, frame, frame["p0"], repeats=1, seed=0, top=20
    )
    assert sorted(table["feature"]) == sorted(PIXELS) and table["importance"].is_monotonic_decreasing
    explain.plot(table, "saliency", "t", tmp_path / "s.png", PIXELS, [1, 4, 4])
    assert (tmp_path / "s.png").stat().st_size > 0


def test_feature_ablation_credits_the_only_column_the_output_reads():
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [5.0, 1.0, 2.0, 0.0], "c": ["x", "y", "x", "y"]})
    pre = Preprocessor.fit(frame, ["c"], ["a", "b"])
    torch.manual_seed(0)
    net = build(NetConfig(pre.cardinalities, pre.numeric_width, [], 0.0, 2))
    with torch.no_grad():  # a linear net reading only b's scaled value: out = 2 * z_b
        layer = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
        layer.weight.zero_()
        layer.bias.zero_()
        emb_width = layer.in_features - pre.numeric_width
        layer.weight[0, emb_width + 1] = 2.0  # numeric block: [z_a, z_b, missing_a, missing_b]
    assert explain.method_for(family("mlp"), net) == "ablation"
    out = explain.attribute(family("mlp"), pre, net.eval(), Regression("y"), frame)
    z_b = (frame["b"] - frame["b"].mean()) / frame["b"].std(ddof=0)
    for row, z in zip(out, z_b, strict=True):
        assert row["explains"] == "prediction"
        assert row["attributions"]["a"] == 0.0 and row["attributions"]["c"] == 0.0
        assert row["attributions"]["b"] == pytest.approx(2.0 * z, abs=1e-5)


def test_token_attributions_cover_each_token_with_unit_norm():
    from keel.model.families.bert import TextPreprocessor, encoder_options
    from keel.workloads.text import default_encoder

    encoder = encoder_options(default_encoder(), layers=2, max_length=16)
    pre = TextPreprocessor.fit("text", encoder["encoder"])
    torch.manual_seed(0)
    net = build(NetConfig([], 0, [], 0.0, 16, 1, **encoder), pretrained=True).eval()
    assert explain.method_for(family("bert"), net) == "tokens"
    frame = pd.DataFrame({"text": ["great rally tonight", "great crowd, great night", "fake news"]})
    out = explain.attribute(family("bert"), pre, net, Binary("label", [0, 1]), frame)
    first = out[0]
    assert first["tokens"][0] == "[CLS]" and first["tokens"][-1] == "[SEP]"
    assert "great" in first["tokens"] and len(first["tokens"]) == len(first["attributions"])
    assert np.linalg.norm(first["attributions"]) == pytest.approx(1.0, abs=1e-4)
    table = explain.global_importance(
        family("bert"),
        pre,
        net,
        Binary("label", [0, 1]),
        lambda f: f,
        frame,
        frame["text"],
        repeats=1,
        seed=0,
        top=5,
    )
    assert table["feature"].tolist() == ["great"] and table["count"].tolist() == [3]  # seen >= 2 times
