"""Commands on the registry: ``keel promote``, ``review``, ``rollback``, ``history`` (the
ledger), ``status`` (one screen) and ``guard`` (the guardrail on a labelled batch)."""

from __future__ import annotations

from typing import Annotated

import typer

from keel.cli.common import (
    JSON_COMMAND,
    FilesOpt,
    JsonOpt,
    MonthsOpt,
    ReasonOpt,
    batch_args,
    command_settings,
    echo,
    echo_err,
    emit,
    fail,
    json_mode,
    json_on,
    json_out,
    log_line,
    registry_call,
    run_flow,
)

commands = typer.Typer()


@commands.command()
def promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version number, or models:/<name>/<N>.")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Who approves: kept in the ledger.")],
    reason: ReasonOpt,
    force: Annotated[bool, typer.Option("--force", help="Promote a version the gate did not bless.")] = False,
    as_json: JsonOpt = False,
):
    """Move `champion` to VERSION: it must be blessed by the gate (or --force) and pass a
    servability check in a fresh process. Recorded in the ledger."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    from keel.registry.promotion import promote as do_promote

    entry = registry_call(
        lambda: do_promote(
            settings.mlflow_store, settings.promotion, version, reviewer=reviewer, reason=reason, force=force
        )
    )
    _report_move(entry)


@commands.command()
def review(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version number, or models:/<name>/<N>.")],
    timeout: Annotated[int, typer.Option("--timeout", help="Seconds to wait for a decision.")] = 3600,
    as_json: JsonOpt = False,
):
    """Pause a keel-review flow run until a reviewer approves or declines VERSION in the
    Prefect UI (needs a Prefect server: KEEL_PREFECT__API_URL). Exit 1 unless approved."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    from prefect.exceptions import FlowPauseTimeout

    from flows.review import review_flow
    from keel.cli import summary
    from tasks.review import ReviewOutcome

    try:
        outcome = registry_call(lambda: run_flow(ctx, lambda: review_flow(settings, version, timeout)))
    except FlowPauseTimeout:  # Prefect fails a flow run whose pause timed out; nothing moved
        outcome = ReviewOutcome(version, "no decision")
    emit(summary.review(outcome), [outcome.line(), log_line()])
    if not outcome.approved:
        raise typer.Exit(1)


@commands.command()
def rollback(
    ctx: typer.Context,
    reason: ReasonOpt,
    to: Annotated[
        str | None, typer.Option("--to", help="Version to restore (default: the previous champion).")
    ] = None,
    actor: Annotated[str, typer.Option("--by", help="Who rolls back.")] = "",
    as_json: JsonOpt = False,
):
    """Restore the previous champion (or --to VERSION) after a servability check."""
    import getpass

    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    from keel.registry.promotion import rollback as do_rollback

    entry = registry_call(
        lambda: do_rollback(
            settings.mlflow_store, settings.promotion, reason=reason, to=to, actor=actor or getpass.getuser()
        )
    )
    _report_move(entry)


def _report_move(entry) -> None:
    """promote / rollback: the ledger entry, as its line or (--json) as the object."""
    if json_on():
        import dataclasses

        return json_out({"command": JSON_COMMAND[0], "ok": True, "entry": dataclasses.asdict(entry)})
    echo(entry.line())


@commands.command()
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
    as_json: JsonOpt = False,
):
    """The ledger: every alias move, who, when, why, from and to (out-of-band moves included)."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    from keel.registry.promotion import Registry, verify_ledger

    def read():
        reg = Registry(settings.mlflow_store, settings.promotion)
        reg.check_reachable()
        if verify:  # as stored: an out-of-band move is a finding, not a new entry
            return reg.ledger(), verify_ledger(reg)
        with reg.lock():
            reg.reconcile()
        return reg.ledger(), None

    entries, checked = registry_call(read)
    if as_json:
        import dataclasses

        from keel.registry.identity import authenticated_store

        if checked is not None and not checked.ok:
            fail(f"ledger verification failed: {checked.problems[0]}")
        return json_out(
            {
                "command": "history",
                "ok": True,
                "entries": [dataclasses.asdict(e) for e in entries],
                "authenticated": bool(authenticated_store(settings.mlflow_store)),
                "verified": None if checked is None else checked.ok,
            },
        )
    for entry in entries:
        echo(entry.line())
    from keel.registry.identity import authenticated_store

    if authenticated_store(settings.mlflow_store):
        echo(f"identities: authenticated by the MLflow server {settings.mlflow.tracking_uri} (basic-auth)")
    else:
        where = (
            "embedded store" if not settings.mlflow.tracking_uri.startswith("http") else "server without auth"
        )
        echo(
            f"identities: NOT authenticated ({where}): actors are the names given (--reviewer, --by) and the "
            "OS user; anyone who can write the store can write any name (keel up --auth for real identities)"
        )
    if checked is not None:
        if not checked.ok:
            for problem in checked.problems:
                echo_err(f"ledger: {problem}")
            fail(f"ledger verification failed: {checked.problems[0]}")
        legacy = checked.entries - checked.chained
        echo(
            f"ledger verified: {checked.entries} entries, hash chain intact, each matches its anchored copy, "
            f"aliases agree" + (f" ({legacy} older entries predate the chain)" if legacy else "")
        )


@commands.command()
def status(ctx: typer.Context, as_json: JsonOpt = False):
    """One screen: champion, challenger and previous (metrics, data version, who promoted
    them), reviews waiting, the last runs, the newest drift check, the schedules with their
    next run, which servers are up, and runs whose process died without closing them."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    from keel.cli.overview import overview, overview_lines
    from keel.registry import tracking
    from keel.registry.promotion import status as read_status

    killed = tracking.killed_runs(settings.mlflow_store)  # also before any model is registered
    if not as_json:
        for run in killed:
            echo(f"KILLED run {run['run_name']} ({run['run_id']}): {run['reason']}")
    state = registry_call(lambda: read_status(settings.mlflow_store, settings.promotion))
    more = overview(settings)
    if as_json:
        return json_out({"command": "status", "ok": True, **state, **more, "killed_runs": killed})
    echo(f"model: {state['model']}")
    if state["out_of_band"]:
        echo(f"WARNING: out-of-band move: {state['out_of_band']} (keel history records it)")
    if state.get("enforced"):
        echo(f"ENFORCED: {state['enforced']}")
    if state.get("ledger_problem"):
        echo(f"WARNING: the ledger is broken: {state['ledger_problem']} (keel history --verify)")
    for alias in ("champion", "challenger", "previous"):
        info = state[alias]
        if info is None:
            echo(f"{alias:<10} (none)")
            continue
        metrics = ", ".join(f"{k}={v}" for k, v in info["metrics"].items())
        echo(
            f"{alias:<10} v{info['version']}  gate={info['gate']}  data={info['data_version']}\n"
            f"{'':<10} {metrics}\n{'':<10} promoted by: {info['promoted_by'] or '-'}"
        )
    for line in overview_lines(more):
        echo(line)


def warm_guard() -> None:
    """What a guard imports anyway, imported while the command's Prefect server starts:
    Great Expectations (the batch is validated first), then the champion's runtime (torch)."""
    from keel.data import validation

    validation.warm()
    import keel.model.runtime.pyfunc  # noqa: F401


@commands.command()
def guard(ctx: typer.Context, month: MonthsOpt = None, file: FilesOpt = None, as_json: JsonOpt = False):
    """Judge the champion on a labelled batch by [guardrail] (nothing is ingested). A broken
    rule under policy auto rolls back to the newest champion in the verified ledger that holds
    on the batch; under review, or when none holds, exit 1 for a reviewer."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    if not month and not file:
        fail("say which labelled batch: --batch NAME or --file PATH", 2)
    months, files = batch_args(settings, month, file)
    from flows.guard import guard_flow

    out = run_flow(ctx, lambda: guard_flow(settings, months or [], files), warm=warm_guard)
    if as_json:
        return json_out({"command": "guard", "ok": True, **out.to_json()})
    for score in out.scores:
        echo(
            f"v{score.version}: "
            + ", ".join(f"{k}={v:.4f}" for k, v in sorted(score.metrics.items()))
            + ("" if score.passed else f"  BREAKS {score.failures()}")
        )
    echo(out.line())
    if out.champion_after != out.champion:
        echo(f"champion: v{out.champion} -> v{out.champion_after}")
