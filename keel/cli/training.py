"""Commands that make models: ``keel train``, ``tune``, the scheduled flows run by hand
(``retrain``, ``monitor``), ``replay`` and ``lineage`` of a version, and ``compress``; each ends
with the training summary (keel.cli.summary) or its ``--json`` object."""

from __future__ import annotations

from typing import Annotated

import typer

from keel.cli.common import (
    FilesOpt,
    JsonOpt,
    MonthsOpt,
    batch_args,
    command_settings,
    echo,
    emit,
    fail,
    json_mode,
    json_on,
    json_out,
    log_line,
    log_path,
    run_flow,
    run_flow_state,
)

commands = typer.Typer()


@commands.command()
def train(ctx: typer.Context, as_json: JsonOpt = False):
    """Validate, train, evaluate, gate against the champion, register, and promote or hold
    (promotion.policy) a model on the current data version. Ends with a summary: the metrics
    beside the champion's, each gate rule, the alias moves, where to look next. Exit 1 when
    the gate rejects the model (it is registered and held; nothing else changes)."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)

    from tasks.train import launched_rank, train_as_worker

    if launched_rank() != 0:  # under torchrun: only rank 0 runs the flow, logs and registers
        run_flow(ctx, lambda: train_as_worker(settings))
        echo(f"rank {launched_rank()}: trained as a DDP worker; rank 0 logs and registers")
        return

    from flows.train import train_flow
    from keel.cli import summary

    before = summary.aliases(settings)
    registered, flow_run = run_flow_state(
        ctx, lambda: train_flow(settings, return_state=True), warm=warm_training
    )
    report_training(ctx, settings, registered, before, flow_run)


def warm_training() -> None:
    """What a training imports anyway, imported while the command's Prefect server starts:
    Great Expectations (the data is validated first), then torch, Lightning and torchmetrics
    (the fit; its first import was ~3.5 s inside the check-model step)."""
    from keel.data import validation

    validation.warm()
    import keel.model.training  # noqa: F401


def report_training(ctx: typer.Context, settings, registered, before, flow_run, extra=None) -> None:
    """The training summary (or --json object); exit 1 when the gate rejected the model."""
    from keel.cli import summary

    s = summary.train(settings, registered, before, flow_run, log_path())
    if registered.variant:
        s["compressed"] = {"version": registered.variant, "decision": registered.variant_decision}
    if json_on():  # retrain and monitor: their own object, the training under "train"
        json_out({**s, "ok": True} if extra is None else {**extra, "train": s})
    else:
        for line in summary.train_text(settings, s):
            echo(line)
        if registered.variant:
            method, decision = settings.compress.method, registered.variant_decision
            echo(f"  compressed v{registered.variant} ({method}): {decision}")
        echo(log_line())
    if not s["gate"]["passed"]:
        raise typer.Exit(1)


@commands.command()
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
    as_json: JsonOpt = False,
):
    """Search the workload's [tune] space with Optuna (pruned through Lightning, seeded),
    the trials fanned out as Prefect task runs (tune.runner: process, thread or dask), the
    study in Optuna's RDB storage (tune.storage; embedded: mlflow/optuna.db); then train the
    best config through the normal flow: gate, registration, policy. Exit 1 when the gate
    rejects the best config's model."""
    json_mode(ctx, as_json)
    overrides: dict = {}
    if trials is not None:
        overrides["tune.trials"] = trials
    if timeout is not None:
        overrides["tune.timeout_s"] = timeout
    if study:
        overrides["tune.study"] = study
    settings = command_settings(ctx).with_overrides(overrides) if overrides else command_settings(ctx)

    from flows.tune import tune_flow
    from keel.cli import console
    from tasks.tune import finished_trials, task_runner

    if (con := console.current()) is not None:  # trials finish in other processes: count them in the study
        console.watch(
            con,
            "trials",
            settings.tune.trials,
            "trials",
            lambda: finished_trials(settings.tune, settings.mlflow_store),
        )

    from keel.cli import summary

    before = summary.aliases(settings)
    tuned = tune_flow.with_options(task_runner=task_runner(settings.tune))
    out, flow_run = run_flow_state(ctx, lambda: tuned(settings, resume, not no_train, return_state=True))
    t = summary.tune(settings, out, before, flow_run, log_path())
    emit(t, [*summary.tune_text(settings, t), log_line()])
    if t["train"] is not None and not t["train"]["gate"]["passed"]:
        raise typer.Exit(1)


@commands.command()
def retrain(ctx: typer.Context, month: MonthsOpt = None, file: FilesOpt = None, as_json: JsonOpt = False):
    """What the monthly schedule runs: take in the next batch, validate it, ingest it, train,
    gate and promote or hold. A rejected batch is recorded and trains nothing (exit 1); a
    model the gate rejects is registered and held (exit 1)."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    months, files = batch_args(settings, month, file)
    from flows.retrain import retrain_flow
    from keel.cli import summary

    before = summary.aliases(settings)
    out, flow_run = run_flow_state(
        ctx, lambda: retrain_flow(settings, months, files, return_state=True), warm=warm_training
    )
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
        fail(f"batch rejected, nothing ingested or trained: {out.detail}")
    if out.guardrail and not json_on():
        echo(f"guardrail: {out.guardrail} ({out.guardrail_detail})")
    if out.model_version and out.run_id:
        from keel.registry.version import RegisteredVersion

        registered = RegisteredVersion(
            settings.mlflow.model_name,
            out.model_version,
            out.run_id,
            f"models:/{settings.mlflow.model_name}/{out.model_version}",
            decision=out.decision,
        )
        if not json_on():
            echo(f"{out.status}: {', '.join(out.batches) or '-'} -> data version {out.data_version}")
        extra = {**head, "ok": True, "retrain": _retrain_json(out)}
        return report_training(ctx, settings, registered, before, flow_run, extra)
    if json_on():
        return json_out({**head, "ok": True, "retrain": _retrain_json(out), "train": None})
    echo(f"{out.status}: {', '.join(out.batches) or '-'}" + (f" ({out.detail})" if out.detail else ""))


@commands.command()
def monitor(ctx: typer.Context, month: MonthsOpt = None, file: FilesOpt = None, as_json: JsonOpt = False):
    """What the daily drift monitor runs: validate the next batch, score its drift against the
    champion's training data, and when it drifted start one retraining (dedupe + cooldown)."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    months, files = batch_args(settings, month, file)
    from flows.monitor import monitor_flow
    from keel.cli import summary
    from keel.data import validation  # the batch is validated first: GX overlaps the server start

    before = summary.aliases(settings)
    out, flow_run = run_flow_state(
        ctx, lambda: monitor_flow(settings, months, files, return_state=True), warm=validation.warm
    )
    if out.status == "rejected":
        fail(f"batch rejected, no drift check, nothing triggered: {out.rejected.detail}")
    r, t = out.report, out.trigger
    head = {
        "command": "monitor",
        "status": out.status,
        "drift": None if r is None else {"share": r.share, "threshold": r.threshold, "drifted": r.drifted},
        "trigger": None if t is None else {"action": t.action, "detail": t.detail},
    }
    if out.retrained:
        if not as_json:
            echo(f"drift share {r.share:.2f} (threshold {r.threshold:.2f}): DRIFTED; retraining: {t.action}")
        return _report_retraining(ctx, settings, out.retrained, before, flow_run, head)
    if as_json:
        return json_out({**head, "ok": True, "retrain": None})
    if out.status == "no-champion":
        echo(f"no champion of '{settings.mlflow.model_name}' yet: nothing to compare with")
    elif out.status == "no-batch":
        echo("no new batch to monitor")
    else:
        echo(
            f"drift share {r.share:.2f} (threshold {r.threshold:.2f}): "
            f"{'DRIFTED' if r.drifted else 'no drift'}; retraining: {t.action} ({t.detail})"
        )


@commands.command()
def replay(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Model version number.")],
    as_json: JsonOpt = False,
):
    """Rebuild a model version from the DVC remote (never touching data/) with its recorded
    config and seed; report metric deltas, weight checksums and environment changes (the
    full report in reports/replay/). Exit 3 when the rebuild differs."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)

    from flows.replay import replay_flow
    from keel.cli import summary

    report = run_flow(ctx, lambda: replay_flow(settings, version))
    r = summary.replay(settings, report)
    emit(r, [*summary.replay_text(r), log_line()])
    if not r["identical"]:
        raise typer.Exit(3)


@commands.command()
def compress(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Model version number to compress.")],
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            "-m",
            help="onnx-int8 (ONNX + dynamic int8), onnx, prune or prune-int8 (structured pruning at "
            "compress.sparsity, a compress.recovery_epochs fine-tune, then ONNX int8); default: "
            "compress.method.",
        ),
    ] = None,
    as_json: JsonOpt = False,
):
    """Build a smaller/faster variant of VERSION, measure its parity on VERSION's own held-out
    rows (metric deltas, label agreement, size, p50/p99 latency in a fresh process), gate it
    (compress.max_drop / min_agreement against VERSION) and register it as a new version
    tagged derived_from and compression; promoted or held as promotion.policy says. Exit 1
    when the parity gate rejects the variant (it is registered and held)."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    from keel.model.compress import METHODS

    chosen = method or settings.compress.method
    if chosen not in METHODS:
        fail(f"--method {chosen!r}: choose one of {', '.join(METHODS)}", 2)

    from flows.compress import compress_flow
    from keel.cli import summary

    before = summary.aliases(settings)
    registered, flow_run = run_flow_state(
        ctx, lambda: compress_flow(settings, version, chosen, return_state=True)
    )
    c = summary.compress(settings, registered, before, version, chosen, flow_run, log_path())
    load = f"  load it   mlflow.pyfunc.load_model('{registered.registry_uri}')"
    emit(c, [*summary.compress_text(settings, c), load, log_line()])
    if not c["gate"]["passed"]:
        raise typer.Exit(1)


@commands.command()
def lineage(ctx: typer.Context, version: Annotated[str, typer.Argument(help="Model version number.")]):
    """Print what a model version was built from: data version and partitions, git sha,
    config, weights checksum and the environment lock."""
    settings = command_settings(ctx)

    from tasks.lineage import load_lineage

    store, data = settings.mlflow_store, settings.data_store
    echo(run_flow(ctx, lambda: load_lineage.fn(store, data, version)).describe())
