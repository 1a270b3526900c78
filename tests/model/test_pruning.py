"""Structured pruning of keel's MLP (keel.model.families.mlp): removing a hidden neuron is
the same as silencing it, so the pruned net must answer exactly like the original with the
dropped neurons' incoming weights and biases zeroed (computed here, by masking, not by
slicing); a family without pruning refuses, naming itself."""

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
    cat, num = torch.randint(0, 5, (64, 2)), torch.randn(64, 4)
    with torch.no_grad():
        torch.testing.assert_close(pruned(cat, num), _masked(net, sparsity)(cat, num))
        assert not torch.allclose(pruned(cat, num), net(cat, num))  # it did remove something
    # what the registered model records rebuilds the smaller net
    again = MLP().rebuild(MLP().describe(pruned, 3), None)
    again.load_state_dict(pruned.state_dict())


def test_a_family_without_pruning_refuses_by_name():
    from keel.model.families import family

    conv = family("conv")
    assert not conv.prunable and family("mlp").prunable
    with pytest.raises(ConfigError, match="'conv' has no structured pruning"):
        conv.prune(nn.Linear(2, 2), 0.5)


def test_sparsity_outside_zero_one_is_a_settings_error_naming_the_key(tmp_path):
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace

    ws = init_workspace(tmp_path / "ws")
    for bad in ("0", "1", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match=r"compress\.sparsity"):
            load_settings(ws, environ={"KEEL_COMPRESS__SPARSITY": bad})
    assert load_settings(ws, environ={"KEEL_COMPRESS__SPARSITY": "0.3"}).compress.sparsity == 0.3
