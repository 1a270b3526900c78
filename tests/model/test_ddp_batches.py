"""The DDP batch sharding: ranks split each epoch's permutation with equal step counts."""

import torch

from keel.model.training import ShuffledBatches


def test_ranks_cover_the_single_process_batches_with_equal_step_counts():
    n, batch = 1001, 64
    single = list(ShuffledBatches(n, batch, seed=7, shuffle=True))
    ranks = [list(ShuffledBatches(n, batch // 2, seed=7, shuffle=True, rank=r, world=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(ShuffledBatches(n, batch // 2, 7, True, 1, 2))
    # step k of the two ranks together is step k of one process (one row dropped: n is odd)
    for k, rows in enumerate(single):
        together = torch.cat([ranks[0][k], ranks[1][k]]) if k < len(ranks[0]) else torch.tensor([])
        assert set(together.tolist()) <= set(rows.tolist())
        assert len(rows) - len(together) <= 1
    seen = torch.cat([b for r in ranks for b in r])
    assert len(seen) == len(set(seen.tolist())) == 1000


def test_a_rank_outside_the_world_is_refused():
    import pytest

    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        ShuffledBatches(10, 2, 0, True, rank=2, world=2)
