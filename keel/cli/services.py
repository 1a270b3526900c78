"""Commands on the machinery: ``keel up`` / ``down`` (the Prefect server, the MLflow server
and the deployment runner), ``workloads`` (the shipped ones) and ``config`` (the resolved
settings and where each value came from)."""

from __future__ import annotations

from typing import Annotated

import typer

from keel.cli.common import (
    JsonOpt,
    command_settings,
    echo,
    fail,
    json_mode,
    json_out,
)

commands = typer.Typer()


@commands.command()
def up(
    ctx: typer.Context,
    prefect_port: Annotated[int | None, typer.Option(help="Default: up.prefect_port.")] = None,
    mlflow_port: Annotated[int | None, typer.Option(help="Default: up.mlflow_port.")] = None,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="Run MLflow with its basic-auth app: the admin is created with MLFLOW_AUTH_ADMIN_PASSWORD "
            "(required; never a default), users sign in with MLFLOW_TRACKING_USERNAME/PASSWORD.",
        ),
    ] = False,
):
    """Start a Prefect server, an MLflow server on the workspace's store and the runner of
    keel's scheduled deployments, on loopback; print their URLs. Stop them with keel down."""
    from keel.ops.services import ServiceError
    from keel.ops.services import up as start

    settings = command_settings(ctx, check=False)
    overrides = {
        k: v for k, v in (("up.prefect_port", prefect_port), ("up.mlflow_port", mlflow_port)) if v is not None
    }
    settings = settings.with_overrides(overrides) if overrides else settings
    echo("starting the Prefect server, the MLflow server and the deployment runner ...")
    try:
        state = start(settings, auth=auth)
    except ServiceError as exc:
        fail(str(exc))
    echo(
        "\n".join(
            [
                f"Prefect UI:  {state.url('prefect-server')}",
                f"Prefect API: {state.prefect_api}",
                f"MLflow UI:   {state.url('mlflow-server')}",
                f"deployments: keel-scheduled-retrain/monthly ({settings.prefect.retrain_cron}), "
                f"keel-drift-monitor/daily ({settings.prefect.monitor_cron}), {settings.prefect.timezone}",
                *[f"  {s.name:<15} pid {s.pid:<8} log {s.log}" for s in state.services],
                "keel commands in this workspace now run against this server; stop it all with: keel down",
            ]
        )
    )


@commands.command()
def down(ctx: typer.Context):
    """Stop exactly the processes keel up started (by PID), and their children."""
    from keel.ops.services import down as stop

    settings = command_settings(ctx, check=False)
    stopped = stop(settings)
    if not stopped:
        echo("nothing to stop: keel is not up for this workspace")
    for s in stopped:
        echo(f"stopped {s.name} (pid {s.pid})")


@commands.command()
def workloads(ctx: typer.Context, as_json: JsonOpt = False):
    """The shipped workloads, one line each; choose one with [workload] name in keel.toml,
    or your own class with [workload] target = "module:Class"."""
    from keel.workloads import shipped

    if as_json:
        json_mode(ctx, True)
        return json_out(
            {
                "command": "workloads",
                "ok": True,
                "workloads": [{"name": n, "summary": d} for n, d in shipped()],
            },
        )
    for name, summary in shipped():
        echo(f"{name:<10} {summary}")


@commands.command()
def config(ctx: typer.Context):
    """Print the resolved settings (every location keel will use) and, under "sources",
    the layer each location came from (defaults, keel.toml, a profile, an environment
    variable such as MLFLOW_TRACKING_URI or KEEL_MLFLOW__TRACKING_URI, or derived)."""
    import json

    settings = command_settings(ctx, check=False)
    echo(json.dumps({**settings.model_dump(mode="json"), "sources": settings.sources}, indent=2))
