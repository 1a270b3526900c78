"""What every keel command shares: loading its settings (with the workload, its network
family and every backend checked before any work), where Prefect's API is, capturing the
engines' output into the command's log file, running a flow so that a user's error becomes
one line and its exit code, and the ``--json`` object. The command modules (data, training,
registry, serving, services) call these; nothing here defines a command."""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from keel.errors import InputError

# Quiet, offline defaults for the engines keel drives (see shared STACK notes).
ENGINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object on stdout and nothing else there (README: --json)."),
]


# Commands that run Prefect flows: with no Prefect server set or up, each starts its own
# (keel.ops.prefect_server) as early as it can, and it dies with the command.
FLOW_COMMANDS = frozenset(
    {"ingest", "train", "drift", "simulate", "retrain", "monitor", "replay", "review", "predict", "guard"}
)


# Commands that open the MLflow store: each first marks the runs a killed command left
# RUNNING (keel.registry.tracking.reap_once), after the pre-flight check proved the store answers.
TRACKING_COMMANDS = (FLOW_COMMANDS - {"ingest"}) | {"lineage", "promote", "rollback", "history", "status"}


# Commands that build a network from the settings' [model] (or the workload's family): they
# check it at start-up (it imports, takes its params, reads the features), and so does
# `keel config`. The others (status, history, promote, ingest, serve: a registered model
# carries its own code) never import torch, Lightning or a team's model module.
MODEL_COMMANDS = frozenset({"train", "tune", "retrain", "simulate", "replay", "compress", "config"})


# Commands that train on the workspace's current dataset version: without one they say so
# at start-up (keel.data.workspace.require_version), before a Prefect server starts or an
# engine is imported. retrain ingests first; replay and compress read a version's own data.
DATA_COMMANDS = frozenset({"train", "tune"})


# Commands that move `champion`: each loads the version in a fresh process first (the
# servability check), whose interpreter starts with the command so that its MLflow import
# overlaps the command's own.
SERVABILITY_COMMANDS = frozenset({"promote", "rollback"})


# The command running under --json, for this process (one command per process): what it
# prints, and the error object its failures print too (fail has no context to ask).
JSON_COMMAND: list[str] = []


def json_mode(ctx: typer.Context, on: bool) -> None:
    if on:
        JSON_COMMAND[:] = [str(ctx.info_name)]


def json_on() -> bool:
    return bool(JSON_COMMAND)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and the exit code; under --json also the one JSON object."""
    if JSON_COMMAND:
        json_out({"command": JSON_COMMAND[0], "ok": False, "error": message, "exit_code": code})
    echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def worker_rank() -> bool:
    """A DDP rank > 0 started by an outside launcher (torchrun): it only trains; rank 0
    runs the flow, opens the MLflow store and talks to Prefect."""
    return os.environ.get("RANK", "0") != "0"


def use_prefect(ctx: typer.Context, settings) -> None:
    """Point Prefect at its API: the settings' server, a running `keel up`, or (for commands
    that run flows) a server of this command's own, started now so it boots while the ML
    stack imports. PREFECT_API_URL set by the user wins over all but prefect.api_url."""
    if settings.prefect.api_url:
        os.environ["PREFECT_API_URL"] = settings.prefect.api_url
        return
    if "PREFECT_API_URL" in os.environ:
        return
    from keel.ops.services import running

    up = running(settings)  # `keel up` is running for this workspace: use its server
    if up is not None:
        os.environ["PREFECT_API_URL"] = up.prefect_api
    elif ctx.info_name in FLOW_COMMANDS and settings.prefect.ephemeral == "managed" and not worker_rank():
        from keel.ops import prefect_server

        server = prefect_server.start(settings.up.state_dir / "logs")
        ctx.obj["prefect_server"] = server
        # atexit runs last-registered first: registered before Prefect is imported, the stop
        # comes after Prefect's own exit hooks have flushed their logs and events to it
        atexit.register(server.stop)
        os.environ["PREFECT_API_URL"] = server.api_url


# Commands whose engines' output goes to a log file (keel.cli.console): the flows, and the
# registry moves that load models.
LIFECYCLE_COMMANDS = FLOW_COMMANDS | {"compress", "tune", "promote", "rollback"}


def capture(ctx: typer.Context, settings) -> None:
    from keel.cli import console

    log = console.log_file(settings.up.state_dir, str(ctx.info_name))
    con = console.capture(log, verbose=ctx.obj["verbose"], json_mode=json_on())
    # atexit runs last-registered first: registered before Prefect and this command's
    # Prefect server, the capture ends after their exit hooks have written their last lines
    atexit.register(con.close)


def json_out(payload: dict) -> None:
    """The command's one JSON object, alone on stdout."""
    import json

    from keel.cli import console

    con = console.current()
    stream = con.out if con is not None else sys.stdout
    stream.write(json.dumps(payload, default=str) + "\n")
    stream.flush()


# The settings of the command running in this process (one per process), for main() to name
# the backend a late failure came from.
COMMAND_SETTINGS: list = []


def command_settings(ctx: typer.Context, check: bool = True):
    """The settings, with every backend they name checked before any work (check=True)."""
    from keel.config.settings import load_settings
    from keel.errors import ConfigError
    from keel.workloads import checked_workload

    try:
        settings = load_settings(ctx.obj["workspace"], profile=ctx.obj["profile"])
        # a workload or net family that cannot work: a config mistake, said now
        checked_workload(settings, model=ctx.info_name in MODEL_COMMANDS)
    except ConfigError as exc:
        fail(str(exc), 2)
    COMMAND_SETTINGS[:] = [settings]
    if ctx.info_name in SERVABILITY_COMMANDS:
        from keel.registry import servability

        servability.warm()
    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)
    if ctx.info_name in LIFECYCLE_COMMANDS and not worker_rank():
        capture(ctx, settings)
    if check:
        from keel.ops.backends import BackendError
        from keel.ops.backends import check as check_backends

        try:
            check_backends(settings)
        except BackendError as exc:
            fail(str(exc), 2)
    if check and ctx.info_name in DATA_COMMANDS and not worker_rank():
        from keel.data.workspace import DataVersionError, require_version

        try:
            require_version(settings.data_store)
        except DataVersionError as exc:
            fail(str(exc))
    use_prefect(ctx, settings)
    if check and ctx.info_name in TRACKING_COMMANDS and not worker_rank():
        from keel.registry import tracking

        tracking.reap_once(settings.mlflow_store)  # runs left RUNNING by a killed command become KILLED
    return settings


def run_flow(ctx: typer.Context, call, warm: Callable[[], None] | None = None):
    """Run a flow (after this command's Prefect server answers, when it has one). ``warm``:
    what the flow will import anyway (an engine its steps load lazily), imported first so
    that it overlaps the server's start. A failure the user can act on (KeelError) becomes
    one line and its exit code; anything else propagates to ``main`` with its traceback."""
    from keel.cli import console
    from keel.errors import KeelError

    server = (ctx.obj or {}).get("prefect_server")
    con = console.current()
    try:
        if warm is not None:
            warm()
        if server is not None:
            server.wait_ready(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
        if con is not None and not ctx.obj.get("announced"):
            import prefect  # noqa: F401  (its logging is configured on import)

            console.follow_prefect(con)
            con.line(f"keel {ctx.info_name}: log {shown_path(con.log_path)}")
            con.restart_clock()
            ctx.obj["announced"] = True
        return call()
    except KeelError as exc:
        fail(str(exc), exc.exit_code)


def shown_path(path: Path | None) -> str:
    if path is None:
        return "-"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


BATCH_HELP = "A batch of the workload (flights: YYYY-MM); repeatable."


def run_flow_state(ctx: typer.Context, call, warm: Callable[[], None] | None = None):
    """(the flow's result, its flow run id) for a flow called with return_state=True."""
    state = run_flow(ctx, call, warm)
    return run_flow(ctx, state.result), str(state.state_details.flow_run_id)


def emit(payload: dict, lines: list[str]) -> None:
    """A command's summary: its lines, or under --json its object (with ``ok``)."""
    if json_on():
        return json_out({**payload, "ok": True})
    for line in lines:
        echo(line)


def log_line() -> str:
    return f"  log       {shown_path(log_path())}"


def log_path() -> Path | None:
    from keel.cli import console

    con = console.current()
    return con.log_path if con else None


def batch_args(settings, month: list[str] | None, file: list[Path] | None):
    from keel.workloads import load_workload

    try:
        workload = load_workload(settings)
        for m in month or []:
            workload.check_batch_name(m)
    except InputError as exc:
        fail(str(exc), 2)
    return (sorted(set(month)) if month else None), {p.stem: p.resolve() for p in file or []}


MonthsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--batch",
        "--month",
        "-b",
        "-m",
        help=BATCH_HELP + " Default: the one after the newest in data/.",
    ),
]


FilesOpt = Annotated[list[Path] | None, typer.Option("--file", "-f", help="A batch file; repeatable.")]


ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why: kept in the ledger.")]


def registry_call(call):
    """Promotion-side failures become one clear message and exit 1; aliases untouched."""
    from mlflow.exceptions import MlflowException

    from keel.errors import PromotionError, is_transient

    try:
        return call()
    except PromotionError as exc:
        fail(str(exc))
    except MlflowException as exc:
        if is_transient(exc):
            raise  # a server that does not answer is not a registry verdict: main() reports it
        fail(f"MLflow registry error: {exc.message}")


def echo(message: str = "", err: bool = False) -> None:
    """keel's own lines: to the terminal (the console's saved streams while the engines'
    output is captured into the log file)."""
    from keel.cli import console

    con = console.current()
    if con is None:
        typer.echo(message, err=err)
    elif err:
        con.loud(message)
    else:
        con.line(message)


def echo_err(message: str) -> None:
    echo(message, err=True)
