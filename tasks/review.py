"""Review tasks: show a reviewer the candidate, then act on the decision."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.input import RunInput

from keel.config.settings import MlflowStore, PromotionConfig
from keel.errors import retry_transient


class ReviewDecision(RunInput):
    """The form a reviewer fills in the Prefect UI to resume a paused keel-review run."""

    approve: bool
    reviewer: str
    reason: str


@task(
    name="describe-candidate",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def describe_candidate(store: MlflowStore, promotion: PromotionConfig, version: str) -> str:
    """The candidate's gate verdict and diff card, published for the reviewer."""
    from prefect.artifacts import create_markdown_artifact

    from keel.registry.promotion import Registry

    reg = Registry(store, promotion)
    reg.check_reachable()
    mv = reg.version(version)
    tags = mv.tags or {}
    if "gate.status" in tags:  # record-gate wrote the card with the tag
        card = Path(reg.client.download_artifacts(mv.run_id, "gate/diff_card.md")).read_text()
    else:
        card = "(no diff card: this version was not gated)"
    head = (
        f"Review **{reg.name} v{mv.version}**: gate {tags.get('gate.status', 'not run')}, "
        f"champion now v{reg.alias('champion')}. Approve to make it champion."
    )
    create_markdown_artifact(
        key="keel-review", markdown=head + "\n\n" + card, description=f"review of {reg.name} v{mv.version}"
    )
    return head


@dataclass(frozen=True)
class ReviewOutcome:
    """What a review came to: ``approved`` (``entry``: the ledger entry of the promotion),
    ``declined`` (tagged on the version), or ``no decision`` before the timeout (Prefect
    fails a flow run whose pause timed out; keel review says so and nothing moves)."""

    version: str
    decision: str
    reviewer: str = ""
    reason: str = ""
    entry: dict[str, Any] | None = None
    flow_run_id: str | None = None  # the keel-review flow run (Prefect UI)

    @property
    def approved(self) -> bool:
        return self.decision == "approved"

    def line(self) -> str:
        if self.decision == "no decision":
            return f"v{self.version}: no decision before the timeout; nothing changed"
        if not self.approved:
            return f"v{self.version} declined by {self.reviewer}: {self.reason}; nothing changed"
        assert self.entry is not None, "an approved review carries its ledger entry"
        return f"v{self.version} approved by {self.reviewer}: champion -> v{self.entry['to_version']}"


@task(name="act-on-review", cache_policy=NONE)
def act_on_review(
    store: MlflowStore, promotion: PromotionConfig, version: str, decision: ReviewDecision
) -> ReviewOutcome:
    from prefect.runtime import flow_run

    from keel.registry import tracking
    from keel.registry.promotion import promote

    run = str(flow_run.id) if flow_run.id else None
    if decision.approve:
        entry = promote(
            store,
            promotion,
            version,
            reviewer=decision.reviewer,
            reason=decision.reason,
        )
        return ReviewOutcome(
            version, "approved", decision.reviewer, decision.reason, dataclasses.asdict(entry), run
        )
    tracking.client(store).set_model_version_tag(
        store.mlflow.model_name,
        version,
        "promotion",
        f"declined by {decision.reviewer}: {decision.reason}"[:4900],
    )
    return ReviewOutcome(version, "declined", decision.reviewer, decision.reason, flow_run_id=run)
