"""keel's deployments, served by Prefect's runner (``keel up`` starts it):

- ``keel-scheduled-retrain/monthly``: keel-retrain on ``prefect.retrain_cron``;
- ``keel-drift-monitor/daily``: keel-monitor on ``prefect.monitor_cron``; a drifted batch
  starts one run of the retraining deployment.

Their parameters are plain JSON (workspace, profile, months, files), so a run can be
started from the Prefect UI, ``prefect deployment run`` or ``run_deployment``.
Serve them by hand with ``python -m flows.deployments --workspace DIR [--profile P]``
against a server (PREFECT_API_URL). With ``--work-pool POOL [--image IMAGE]`` they are
registered to a work pool instead (a process worker, or Kubernetes jobs: infra/k8s/),
and that pool's workers run them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow

from flows.monitor import monitor_flow
from flows.retrain import retrain_flow
from keel.config.settings import Settings
from tasks.monitor import MonitorOutcome
from tasks.retrain import RetrainOutcome, load_workspace_settings


@flow(name="keel-scheduled-retrain")
def scheduled_retrain(
    workspace: str,
    profile: str | None = None,
    months: list[str] | None = None,
    files: dict[str, str] | None = None,
) -> RetrainOutcome:
    settings = load_workspace_settings(workspace, profile)
    return retrain_flow(settings, months, {k: Path(v) for k, v in (files or {}).items()})


@flow(name="keel-drift-monitor")
def drift_monitor(
    workspace: str,
    profile: str | None = None,
    months: list[str] | None = None,
    files: dict[str, str] | None = None,
) -> MonitorOutcome:
    settings = load_workspace_settings(workspace, profile)
    return monitor_flow(settings, months, {k: Path(v) for k, v in (files or {}).items()})


def deployments(settings: Settings) -> list:
    """The two deployments of a workspace, with its schedules (Prefect RunnerDeployments)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    params = {"workspace": str(settings.workspace), "profile": settings.profile}
    tz = settings.prefect.timezone
    return [
        scheduled_retrain.to_deployment(
            name="monthly",
            schedules=[Cron(settings.prefect.retrain_cron, timezone=tz)],
            description="Retrain on the next batch: ingest, validate, train, gate, promote or hold.",
            parameters=params,
            tags=["keel"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
        drift_monitor.to_deployment(
            name="daily",
            schedules=[Cron(settings.prefect.monitor_cron, timezone=tz)],
            description="Drift of the next batch against the champion's training data; "
            "a drift starts one retraining.",
            parameters=params,
            tags=["keel"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    from prefect import serve

    from keel.config.settings import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m flows.deployments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--profile")
    parser.add_argument("--work-pool", help="register to this work pool instead of serving")
    parser.add_argument("--image", help="the keel image the pool's jobs run (Kubernetes/Docker pools)")
    args = parser.parse_args(argv)
    settings = load_settings(args.workspace, profile=args.profile)
    # Under `python -m` this file is __main__; the runner needs the flows' importable home.
    from flows.deployments import deployments as importable

    if args.work_pool:
        from prefect import deploy

        deploy(
            *importable(settings), work_pool_name=args.work_pool, image=args.image, build=False, push=False
        )
        return
    # one run at a time: retrainings of one workspace share its data/ and DVC cache
    serve(*importable(settings), limit=1)


if __name__ == "__main__":
    main()
