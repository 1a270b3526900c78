"""Structured pruning of keel's MLP (keel.model.families.mlp), conv net (channels,
keel.model.families.conv) and BERT (heads and feed-forward neurons,
keel.model.families.bert): removing a unit is the same as silencing it,
so the pruned net must answer exactly like the original with the dropped units' weights
zeroed (computed here, by masking, not by slicing); a family without pruning refuses,
naming itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from keel.errors import ConfigError
from keel.model.net import NetConfig


def _masked(net, sparsity: float):
    """The original architecture, each hidden layer's least important neurons silenced."""
    from keel.model.families.mlp import TabularNet

    masked = TabularNet(net.cfg).eval()
    masked.load_state_dict(net.state_dict())
    linears = [m for m in masked.mlp if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, width in enumerate(net.cfg.hidden):
            score = linears[i].weight.abs().sum(1) * linears[i + 1].weight.abs().sum(0)
            keep = score.argsort(descending=True)[: max(1, round(width * (1 - sparsity)))]
            drop = torch.ones(width, dtype=torch.bool)
            drop[keep] = False
            linears[i].weight[drop] = 0.0
            linears[i].bias[drop] = 0.0
    return masked


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_a_pruned_mlp_answers_as_the_original_with_its_dropped_neurons_silenced(sparsity):
    from keel.model.families.mlp import MLP, TabularNet

    torch.manual_seed(7)
    net = TabularNet(NetConfig([5, 7], 4, [32, 16], 0.1, 4, outputs=3)).eval()
    pruned = MLP().prune(net, sparsity)
    assert pruned.cfg.hidden == [max(1, round(w * (1 - sparsity))) for w in (32, 16)]
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in net.parameters())
    _answers_as_masked(
        MLP(), net, pruned, _masked(net, sparsity), torch.randint(0, 5, (64, 2)), torch.randn(64, 4)
    )


def _answers_as_masked(family, net, pruned, masked, cat, num) -> None:
    """The pruned net answers as the masked original, not as the original (it did remove
    something), and what the registered model records (net.json) rebuilds the smaller net."""
    with torch.no_grad():
        torch.testing.assert_close(pruned(cat, num), masked(cat, num))
        assert not torch.allclose(pruned(cat, num), net(cat, num))
    again = family.rebuild(family.describe(pruned, net.cfg.outputs), None)
    again.load_state_dict(pruned.state_dict())


def _conv_masked(net, sparsity: float):
    """The original conv net, each conv layer's least important output channels silenced (their
    BatchNorm scale and shift zeroed, so ReLU and pooling pass zeros on), scored here from the
    weights: filter L1 x |BN scale| x L1 of the next conv's input slice or of the head's columns."""
    import copy

    masked = copy.deepcopy(net).eval()
    convs = [m for m in masked.convs if isinstance(m, nn.Conv2d)]
    norms = [m for m in masked.convs if isinstance(m, nn.BatchNorm2d)]
    head = masked.head[0]
    with torch.no_grad():
        scores = []
        for i, (conv, norm) in enumerate(zip(convs, norms, strict=True)):
            if i + 1 < len(convs):
                reads = convs[i + 1].weight.abs().sum(dim=(0, 2, 3))
            else:
                px = 16  # 8x8 pooled once (after the second conv layer): 4x4 per channel
                per_pixel = head.weight[:, : conv.out_channels * px].abs()
                reads = torch.stack(
                    [per_pixel[:, c * px : (c + 1) * px].sum() for c in range(conv.out_channels)]
                )
            scores.append(conv.weight.abs().sum(dim=(1, 2, 3)) * norm.weight.abs() * reads)
        for norm, score in zip(norms, scores, strict=True):
            keep = score.argsort(descending=True)[: max(1, round(len(score) * (1 - sparsity)))]
            drop = torch.ones(len(score), dtype=torch.bool)
            drop[keep] = False
            norm.weight[drop] = 0.0
            norm.bias[drop] = 0.0
    return masked


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_a_pruned_conv_net_answers_as_the_original_with_its_dropped_channels_silenced(sparsity):
    from keel.model.families.conv import Conv, ConvNet

    torch.manual_seed(11)
    cfg = NetConfig([3], 2 * 8 * 8, [16], 0.0, 4, outputs=10, arch="conv", image=[1, 8, 8], channels=[8, 12])
    net = ConvNet(cfg)
    net.train()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for _ in range(3):
            net(torch.randint(0, 3, (32, 1)), torch.randn(32, 128) * 2 + 0.5)
    net.eval()
    pruned = Conv().prune(net, sparsity)
    assert pruned.cfg.channels == [max(1, round(c * (1 - sparsity))) for c in (8, 12)]
    assert pruned.cfg.hidden == [16]  # the dense head keeps its neurons
    masked = _conv_masked(net, sparsity)
    _answers_as_masked(Conv(), net, pruned, masked, torch.randint(0, 3, (64, 1)), torch.randn(64, 128))


def test_a_family_without_pruning_refuses_by_name():
    from keel.model.families import family
    from keel.model.families.base import Family

    class Team(Family):  # a team's own family that declares no pruning
        name = "team-net"

    assert not Team.prunable and family("mlp").prunable and family("conv").prunable
    with pytest.raises(ConfigError, match="'team-net' has no structured pruning"):
        Team.prune(Team.__new__(Team), nn.Linear(2, 2), 0.5)


def test_sparsity_outside_zero_one_is_a_settings_error_naming_the_key(tmp_path):
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace

    ws = init_workspace(tmp_path / "ws")
    for bad in ("0", "1", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match=r"compress\.sparsity"):
            load_settings(ws, environ={"KEEL_COMPRESS__SPARSITY": bad})
    assert load_settings(ws, environ={"KEEL_COMPRESS__SPARSITY": "0.3"}).compress.sparsity == 0.3


def _bert_masked(net, sparsity: float):
    """The original BERT, each layer's least important heads and feed-forward neurons silenced:
    their columns in the attention output / the feed-forward output zeroed (scored here from
    the weights, independently of keel.model.families.bert)."""
    import copy

    masked = copy.deepcopy(net).eval()
    with torch.no_grad():
        for layer in masked.bert.encoder.layer:
            attn, out = layer.attention.self, layer.attention.output
            size = attn.attention_head_size
            heads = attn.all_head_size // size
            reads = sum(getattr(attn, n).weight.abs().sum(1) for n in ("query", "key", "value"))
            score = (reads * out.dense.weight.abs().sum(0)).view(heads, size).sum(1)
            for h in score.argsort(descending=True)[max(1, round(heads * (1 - sparsity))) :]:
                out.dense.weight[:, h * size : (h + 1) * size] = 0.0
            inner, outer = layer.intermediate.dense, layer.output.dense
            score = inner.weight.abs().sum(1) * outer.weight.abs().sum(0)
            width = len(score)
            outer.weight[:, score.argsort(descending=True)[max(1, round(width * (1 - sparsity))) :]] = 0.0
    return masked


@pytest.mark.slow
@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_a_pruned_bert_answers_as_the_original_with_its_dropped_heads_and_neurons_silenced(sparsity):
    """On the real all-MiniLM-L6-v2 weights (its first 2 layers): 12 heads and 1,536
    feed-forward neurons per layer."""
    from keel.model.families import build, family
    from keel.model.families.bert import encoder_options
    from keel.workloads.text import default_encoder

    options = encoder_options(default_encoder(), layers=2, max_length=16)
    torch.manual_seed(3)
    net = build(NetConfig([], 0, [], 0.1, 16, 3, **options), pretrained=True).eval()
    bert = family("bert")
    assert bert.prunable
    pruned = bert.prune(net, sparsity)
    heads, width = round(12 * (1 - sparsity)), round(1536 * (1 - sparsity))
    assert pruned.cfg.encoder["heads"] == heads
    assert pruned.cfg.encoder["config"]["intermediate_size"] == width
    assert pruned.bert.encoder.layer[1].attention.self.query.out_features == heads * 32
    ids = torch.randint(1000, 20000, (4, 12))
    mask = torch.ones_like(ids)
    mask[2:, 8:] = 0  # padded rows too
    with torch.no_grad():
        torch.testing.assert_close(
            pruned(ids, mask), _bert_masked(net, sparsity)(ids, mask), rtol=1e-4, atol=1e-5
        )
        assert not torch.allclose(pruned(ids, mask), net(ids, mask), atol=1e-4)  # it did remove something
    # what the registered model records (net.json) rebuilds the smaller net, weights and all
    again = bert.rebuild(bert.describe(pruned, 3), None)
    again.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(ids, mask), pruned(ids, mask))


def test_a_distilled_recovery_copies_the_source_closer_than_one_on_the_labels(tmp_path):
    """compress.recovery = "distill": the pruned net learns the source net's raw outputs; after
    the same epochs on the same rows it is nearer the source (mean squared output difference on
    rows neither fine-tune saw) than before, and nearer than a recovery on the labels; the
    source itself is not trained."""
    import numpy as np
    import pandas as pd

    from keel.config.settings import FeatureConfig, load_settings
    from keel.model.families.mlp import MLP
    from keel.model.training import fine_tune, fit

    rng = np.random.default_rng(3)
    numeric = [f"x{i}" for i in range(6)]
    frame = pd.DataFrame(rng.normal(size=(1200, 6)), columns=numeric)
    frame["c"] = rng.choice(list("abc"), size=len(frame))
    frame["y"] = ((frame.x0 * frame.x1 + np.sin(3 * frame.x2) + (frame.c == "a")) > 0.5).astype(int)
    train, val, held = frame.iloc[:800], frame.iloc[800:1000], frame.iloc[1000:]
    features = FeatureConfig(categorical=["c"], numeric=numeric, label="y", slices=[])
    cfg = load_settings(tmp_path, environ={}).train.model_copy(
        update={"hidden": [64, 32], "max_epochs": 4, "batch_size": 64, "patience": 4, "lr": 3e-3}
    )
    source = fit(train, val, features, cfg, family=MLP())
    pre, obj, teacher = source.preprocessor, source.objective, source.net
    a, b = (torch.from_numpy(x) for x in pre.transform(held))
    weights = {k: v.clone() for k, v in teacher.state_dict().items()}

    def distance(net) -> float:
        with torch.no_grad():
            return float(nn.functional.mse_loss(net.eval()(a, b), teacher.eval()(a, b)))

    before = distance(MLP().prune(teacher, 0.5))
    short = cfg.model_copy(update={"max_epochs": 2})
    on_labels = fine_tune(MLP(), MLP().prune(teacher, 0.5), pre, obj, train, val, short)
    distilled = fine_tune(MLP(), MLP().prune(teacher, 0.5), pre, obj, train, val, short, teacher=teacher)
    assert distance(distilled) < before and distance(distilled) < distance(on_labels), (
        before,
        distance(on_labels),
        distance(distilled),
    )
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in weights.items())
