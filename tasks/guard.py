"""Guardrail tasks: the champion judged on a labelled batch before anything else uses it
(keel.registry.guardrail), the outcome logged and published, and a breach that stays for a reviewer
turned into a failed run (exit 1)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import GuardrailConfig, MlflowStore, PromotionConfig
from keel.data.types import Batch
from keel.registry.guardrail import GuardOutcome


@task(name="guard-champion", cache_policy=NONE)  # not retried: a rollback must not run twice
def guard_champion(
    store: MlflowStore,
    promotion: PromotionConfig,
    rules: GuardrailConfig,
    label: str,
    batches: list[Batch],
) -> GuardOutcome:
    """Score the champion on the batches (``label``: their label column), judge it by
    [guardrail] ``rules``, roll back under policy auto (a move ``promotion`` governs); log the
    scores (always) and publish the verdict to the Prefect UI."""
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    from keel.registry import guardrail

    outcome = guardrail.guard(store, promotion, rules, label, {b.name: b.frame for b in batches})
    guardrail.log(store, rules, outcome)
    if outcome.scores:
        create_markdown_artifact(
            key="keel-guardrail", markdown=outcome.markdown(), description=f"guardrail: {outcome.status}"
        )
    (get_run_logger().warning if outcome.breached else get_run_logger().info)(outcome.line())
    return outcome


@task(name="require-guardrail", cache_policy=NONE)
def require_guardrail(outcome: GuardOutcome | None) -> GuardOutcome | None:
    """A breach the guardrail did not resolve: stop with exit 1, naming the rule and the batch.
    None: the caller did not guard (its caller did)."""
    from keel.registry.guardrail import GuardrailBreach

    if outcome is not None and outcome.status == "review":
        raise GuardrailBreach(
            f"guardrail breached on {', '.join(outcome.batches)}: {outcome.detail}. "
            f"Decide with `keel rollback --to N --reason ...` or `keel promote`."
        )
    return outcome
