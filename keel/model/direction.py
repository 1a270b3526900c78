"""Which way a metric is better: the one fact about metrics that the gate, the guardrail,
``keel status`` and ``keel history`` need. Pure Python: importing it costs nothing (no torch,
no numpy), so the commands that only read the registry never import the ML stack."""

from __future__ import annotations

# Lower is better for these; every other metric keel computes is better higher.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae", "mse", "brier"})


def higher_is_better(metric: str) -> bool:
    """``test/log_loss`` -> False; ``val/roc_auc`` -> True (the last path part decides);
    ``test/slice_gap/<column>`` (a gap between slices) -> False."""
    if "/slice_gap/" in f"/{metric}":
        return False
    return metric.rsplit("/", 1)[-1] not in LOWER_IS_BETTER
