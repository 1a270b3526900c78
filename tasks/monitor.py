"""The drift monitor's outcome: what it saw and what it started."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NONE

from keel.data.drift import DriftReport
from keel.registry.guardrail import GuardOutcome
from tasks.retrain import RetrainOutcome
from tasks.trigger import Trigger


@dataclass(frozen=True)
class MonitorOutcome:
    """status: no-batch | rejected | no-champion | no-drift | drift."""

    status: str
    report: DriftReport | None = None
    trigger: Trigger | None = None
    retrained: RetrainOutcome | None = None  # inline retraining (no server)
    rejected: RetrainOutcome | None = None
    guardrail: GuardOutcome | None = None  # the champion judged on the batch before the drift test


@task(name="monitor-outcome", cache_policy=NONE)
def monitor_outcome(
    status: str,
    report: DriftReport | None = None,
    trigger: Trigger | None = None,
    retrained: RetrainOutcome | None = None,
    rejected: RetrainOutcome | None = None,
    guardrail: GuardOutcome | None = None,
) -> MonitorOutcome:
    return MonitorOutcome(status, report, trigger, retrained, rejected, guardrail)
