"""keel-review: a paused flow run that waits for a reviewer's decision in the Prefect UI."""

from __future__ import annotations

from prefect import flow, pause_flow_run

from keel.config.settings import Settings
from tasks.review import ReviewDecision, ReviewOutcome, act_on_review, describe_candidate


@flow(name="keel-review", validate_parameters=False)
def review_flow(settings: Settings, version: str, timeout_s: int = 3600, poll_s: int = 10) -> ReviewOutcome:
    store, promotion = settings.mlflow_store, settings.promotion
    description = describe_candidate(store, promotion, version)
    decision = pause_flow_run(
        wait_for_input=ReviewDecision.with_initial_data(
            description=description, approve=False, reviewer="", reason=""
        ),
        timeout=timeout_s,
        poll_interval=min(poll_s, max(1, timeout_s)),  # a short timeout ends near its time, not a poll later
    )
    return act_on_review(store, promotion, version, decision)
