"""Commands that serve the champion: ``keel serve`` (HTTP, following the alias) and
``predict`` (a file, in chunks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli.common import (
    JsonOpt,
    command_settings,
    echo,
    fail,
    json_mode,
    json_out,
    registry_call,
    run_flow,
)

commands = typer.Typer()


@commands.command()
def predict(
    ctx: typer.Context,
    input: Annotated[Path, typer.Option("--input", "-i", help=".parquet or .csv rows to score.")],
    output: Annotated[Path, typer.Option("--output", "-o", help=".parquet or .csv to write.")],
    as_json: JsonOpt = False,
):
    """Score a file with the champion, in chunks (serve.chunk_rows). Bad rows keep their
    row number and an error; the others are scored."""
    json_mode(ctx, as_json)
    settings = command_settings(ctx)
    if not input.is_file():
        fail(f"{input}: no such file", 2)
    from flows.predict import predict_flow

    result = run_flow(ctx, lambda: predict_flow(settings, input.resolve(), output.resolve()))
    for line in result["first_errors"]:
        echo(f"  {line}", err=True)
    if as_json:
        return json_out({"command": "predict", "ok": True, **result})
    echo(
        f"scored {result['rows']} rows with v{result['model_version']} -> {result['output']}"
        f" ({result['bad_rows']} bad rows)"
    )


@commands.command()
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
    settings = command_settings(ctx)
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

        version, why = registry_call(lambda: attested_champion(settings.mlflow_store, settings.promotion))
        if version is None:
            fail(f"promotion.enforce: no champion of '{settings.mlflow.model_name}' to serve: {why}")
    else:
        version = tracking.current_alias_version(settings.mlflow_store, "champion")
    if version is None:
        fail(f"model '{settings.mlflow.model_name}' has no champion to serve yet: train and promote one")
    holder = ModelHolder(load_version(settings.mlflow_store, version))
    shadowing = None
    if shadow:
        from keel.serving.shadow import Shadow

        shadowing = Shadow(settings)
        shadowing.start()
    watcher = AliasWatcher(settings, holder, poll or settings.serve.poll_s, shadowing)
    watcher.start()
    host, port = host or settings.serve.host, settings.serve.port if port is None else port
    echo(f"serving {settings.mlflow.model_name} v{version} (champion) on http://{host}:{port}")
    app_ = create_app(settings, holder, shadowing)
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)
    watcher.stopped.set()  # (the app's shutdown flushes the shadow's last stats)
