"""What `keel status` shows besides the aliases: the reviews waiting, the workspace's last
runs, the newest drift check, the schedules with their next run, and which of `keel up`'s
servers answer. Each part reads what MLflow, Prefect and `.keel/up.json` already hold.

It never writes: no experiment or store is created to find that there is none, and a
Prefect server is asked only when `keel up` runs one for this workspace (without it there
is no schedule to ask about).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from keel.config.settings import Settings
from keel.registry.gate import AWAITING


def pending_reviews(settings: Settings, client) -> list[dict[str, Any]]:
    """Versions the gate blessed that wait for a reviewer (newest first), champion excluded."""
    from mlflow.exceptions import MlflowException

    name = settings.mlflow.model_name
    try:
        versions = client.search_model_versions(f"name='{name}'", max_results=200)
    except MlflowException:
        return []
    try:
        champion = str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        champion = None
    waiting = [
        v for v in versions if (v.tags or {}).get("promotion") == AWAITING and str(v.version) != champion
    ]
    return [
        {
            "version": str(v.version),
            "metrics": {k: val for k, val in sorted((v.tags or {}).items()) if k.startswith("test/")},
            "created": _iso(v.creation_timestamp),
        }
        for v in sorted(waiting, key=lambda v: -int(v.version))
    ]


def last_runs(settings: Settings, client, n: int = 3) -> list[dict[str, Any]]:
    """The newest runs of the workspace's experiments (training and monitoring)."""
    from keel.registry.tracking import workspace_experiments

    exp_ids = workspace_experiments(settings.mlflow_store, client)
    if not exp_ids:
        return []
    runs = client.search_runs(exp_ids, max_results=n, order_by=["attributes.start_time DESC"])
    return [
        {
            "run_id": r.info.run_id,
            "name": r.info.run_name or "",
            "status": r.info.status,
            "started": _iso(r.info.start_time),
        }
        for r in runs
    ]


def drift_state(settings: Settings, client) -> dict[str, Any] | None:
    """The newest drift check (tasks/drift.py's run): batch, champion, share, verdict."""
    exp = client.get_experiment_by_name(settings.mlflow.experiment + settings.drift.experiment_suffix)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"])
    if not runs:
        return None
    run = runs[0]
    return {
        "batch": run.data.tags.get("batch"),
        "champion": run.data.tags.get("champion"),
        "drifted": run.data.tags.get("drifted") == "true",
        "share": run.data.metrics.get("drift/share"),
        "at": _iso(run.info.start_time),
    }


def servers(up: Any) -> list[dict[str, Any]]:
    """`keel up`'s services (``up``: its recorded state, or None) and whether each process is alive."""
    from keel.ops.services import alive

    if up is None:
        return []
    return [{"name": s.name, "url": s.url, "pid": s.pid, "up": alive(s)} for s in up.services]


def schedules(settings: Settings, up: Any, live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """keel's two deployments: their cron and, when `keel up` serves them, the next run."""
    from keel.ops.services import MONITOR_DEPLOYMENT, RETRAIN_DEPLOYMENT

    out: list[dict[str, Any]] = [
        {"deployment": RETRAIN_DEPLOYMENT, "cron": settings.prefect.retrain_cron, "next_run": None},
        {"deployment": MONITOR_DEPLOYMENT, "cron": settings.prefect.monitor_cron, "next_run": None},
    ]
    if up is None or not any(s["name"] == "prefect-server" and s["up"] for s in live):
        return out
    for item in out:
        item["next_run"] = _next_run(up.prefect_api, item["deployment"])
    return out


def _next_run(api: str, deployment: str) -> str | None:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        try:
            d = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            return None
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=1,
        )
    when = runs[0].expected_start_time if runs else None
    return when.isoformat(timespec="minutes") if when else None


def overview(settings: Settings) -> dict[str, Any]:
    """Everything above, for `keel status` (text and --json)."""
    from keel.ops.services import read_state
    from keel.registry import tracking

    client = tracking.client(settings.mlflow_store)
    up = read_state(settings)  # keel up's record, read once
    live = servers(up)
    return {
        "pending_reviews": pending_reviews(settings, client),
        "last_runs": last_runs(settings, client),
        "drift": drift_state(settings, client),
        "schedules": schedules(settings, up, live),
        "servers": live,
    }


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def overview_lines(more: dict) -> list[str]:
    """status's lower half: one line per item, short enough for one screen."""
    reviews = more["pending_reviews"]
    lines = [
        "reviews    "
        + (
            "; ".join(
                f"v{r['version']} ({', '.join(f'{k}={v}' for k, v in list(r['metrics'].items())[:2])})"
                for r in reviews
            )
            + "  -> keel promote N --reviewer ... --reason ..."
            if reviews
            else "none waiting"
        )
    ]
    for i, run in enumerate(more["last_runs"]):
        lines.append(
            f"{'last runs' if i == 0 else '':<10} {run['started']}  {run['status']:<9} {run['name']}"
        )
    drift = more["drift"]
    lines.append(
        "drift      never checked (keel drift --batch NAME)"
        if drift is None
        else f"drift      {'DRIFTED' if drift['drifted'] else 'no drift'} on {drift['batch']} vs "
        f"v{drift['champion']} (share {drift['share']:.2f}, {drift['at']})"
    )
    for sched in more["schedules"]:
        when = sched["next_run"] or "not scheduled (keel up runs the schedules)"
        lines.append(f"schedule   {sched['deployment']} '{sched['cron']}': next {when}")
    servers = more["servers"]
    lines.append(
        "servers    "
        + (
            ", ".join(f"{x['name']} {'up' if x['up'] else 'DOWN'} {x['url']}" for x in servers)
            if servers
            else "none (keel up starts Prefect, MLflow and the scheduler)"
        )
    )
    return lines
