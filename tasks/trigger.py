"""Drift -> retraining: one drift starts one retraining.

Dedupe: a drift is identified by the model and the batch's content; the retraining it
starts carries that key as a Prefect tag (and, through a server, as the flow run's
idempotency key), so one batch never starts a second retraining, even once it is ingested
and a new champion took over. A retraining that failed does not count: the next monitor
run after the cooldown tries again. Cooldown: no
drift-triggered retraining of the same model within ``drift.cooldown_s`` of the last one.
Both are answered by Prefect's own flow-run records (the server's, or the ephemeral
API's database under PREFECT_HOME), never by a home-made store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from keel.data.drift import DriftReport
from keel.errors import retry_transient
from keel.ops.services import RETRAIN_DEPLOYMENT

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
from keel.config.settings import DriftConfig, MlflowStore
from keel.data.types import Batch

TRIGGER_TAG = "keel-trigger:drift"


@dataclass(frozen=True)
class Trigger:
    """What the monitor did about a drift report.

    action: none (no drift) | off (drift.trigger = false) | deduped | cooldown
            | deployment (a run of RETRAIN_DEPLOYMENT was created) | inline (no server:
            the retraining runs as a subflow of the monitor)."""

    action: str
    key: str = ""
    tags: list[str] = field(default_factory=list)
    detail: str = ""
    flow_run_id: str | None = None


def model_tag(store: MlflowStore) -> str:
    ident = f"{store.mlflow.registry_uri}|{store.mlflow.model_name}"
    return "keel-model:" + hashlib.sha256(ident.encode()).hexdigest()[:12]


def drift_key(store: MlflowStore, batches: list[Batch]) -> str:
    import pandas as pd

    h = hashlib.sha256(model_tag(store).encode())
    for b in sorted(batches, key=lambda b: b.name):  # the rows, not the names they came under
        h.update(pd.util.hash_pandas_object(b.frame, index=False).values.tobytes())
    return h.hexdigest()[:24]


def _server_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


@task(
    name="decide-trigger",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def decide_trigger(
    store: MlflowStore, drift: DriftConfig, report: DriftReport, batches: list[Batch]
) -> Trigger:
    """No drift, switched off, the same drift already handled, in cooldown, or go
    (through the retraining deployment when a server has it, else inline)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    log = get_run_logger()
    if not report.drifted:
        return Trigger("none", detail=f"share {report.share:.2f} < {report.threshold:.2f}")
    if not drift.trigger:
        return Trigger("off", detail="drift.trigger = false")
    key = drift_key(store, batches)
    tags = [TRIGGER_TAG, model_tag(store), f"keel-drift:{key}"]
    failed = [StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
    with get_client(sync_client=True) as client:
        same = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"keel-drift:{key}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=failed)),
            ),
            limit=1,
        )
        # a retraining that failed does not count as handled: the next monitor run (after
        # the cooldown) starts a new attempt, under a new idempotency key
        attempts = len(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[f"keel-drift:{key}"]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=failed)),
                )
            )
        )
        if same:
            log.info("drift %s already started retraining %s: not again", key, same[0].name)
            return Trigger(
                "deduped", key, tags, f"already handled by flow run {same[0].name}", str(same[0].id)
            )
        since = datetime.now(UTC) - timedelta(seconds=drift.cooldown_s)
        recent = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[TRIGGER_TAG, model_tag(store)]),
                # pydantic coerces an aware datetime into Prefect's DateTime
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since),  # type: ignore[arg-type]
            ),
            limit=1,
        )
        if recent:
            log.info(
                "in cooldown: drift-triggered run %s started within %.0f s",
                recent[0].name,
                drift.cooldown_s,
            )
            return Trigger(
                "cooldown",
                key,
                tags,
                f"cooldown: {recent[0].name} started within {drift.cooldown_s:.0f} s",
                str(recent[0].id),
            )
        if _server_url():
            try:
                client.read_deployment_by_name(RETRAIN_DEPLOYMENT)
                return Trigger("deployment", f"{key}-{attempts}", tags, f"run of {RETRAIN_DEPLOYMENT}")
            except ObjectNotFound:
                pass
    return Trigger("inline", key, tags, "no retraining deployment: retraining inline")


@task(
    name="start-retraining",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_transient,
)
def start_retraining(
    workspace: Path, profile: str | None, trigger: Trigger, months: list[str], files: dict[str, Path] | None
) -> Trigger:
    """A run of the retraining deployment for this batch; the executor (keel up's runner,
    or any worker) picks it up. The drift key is its idempotency key."""
    from prefect.deployments import run_deployment

    # sync call (run_deployment is sync-compatible): a FlowRun, not a coroutine
    run: FlowRun = run_deployment(  # type: ignore[assignment]
        RETRAIN_DEPLOYMENT,
        timeout=0,
        tags=trigger.tags,
        idempotency_key=trigger.key,
        flow_run_name=f"drift-{'-'.join(months or list(files or {}))}",
        parameters={
            "workspace": str(workspace),
            "profile": profile,
            "months": months,
            "files": {k: str(v) for k, v in (files or {}).items()} or None,
        },
    )
    get_run_logger().info("drift: started %s (flow run %s)", RETRAIN_DEPLOYMENT, run.name)
    return replace(trigger, flow_run_id=str(run.id), detail=f"{trigger.detail}: {run.name}")
