"""The ``keel`` command: the typer app, its global options and ``main``, the console script.
The commands live in one module per group (keel.cli.data, training, registry, serving,
services) and are merged into this app. Imports stay lazy: ``keel --help`` loads none of the
ML stack.

Exit codes: 0 done; 1 rejected or the user's to fix (bad data, a model the gate rejected,
a refused promotion, an unknown version: one line says what); 2 bad arguments or settings,
or a backend that does not answer; 3 a replay that differs; 70 an unexpected failure,
printed with its traceback.

Lifecycle commands print one line per step and a summary; the engines' own output goes to
a log file in the workspace (keel.cli.console), shown too with ``-v``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from keel.cli import data, registry, services, serving, training
from keel.cli.common import COMMAND_SETTINGS, echo_err

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
    rich_markup_mode=None,  # help text as written: "[tune] space" is a keel.toml section, not markup
)
for group in (data, training, registry, serving, services):  # the order `keel --help` lists them in
    app.add_typer(group.commands)

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
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Show the engines' full logs (Prefect, MLflow, GX, DVC, Lightning) too."
    ),
]


@app.callback(epilog=EXIT_CODES)
def _global(
    ctx: typer.Context,
    workspace: WorkspaceOpt = None,
    profile: ProfileOpt = None,
    verbose: VerboseOpt = False,
):
    ctx.obj = {"workspace": workspace, "profile": profile, "verbose": verbose}


def main() -> None:
    """The console script: the typer app, with unexpected failures kept visible. A failure
    no command caught prints its traceback and exits 70. A backend that stopped answering
    (after the tasks' retries) exits 2 like the pre-flight check, in one line naming the
    setting and its address; its traceback goes to the command's log file."""
    try:
        app()
    except Exception as exc:
        import traceback

        from keel.cli import console
        from keel.errors import EXIT_CONFIG, EXIT_INTERNAL, is_transient

        con = console.current()
        if is_transient(exc):
            log = _log_traceback(con)
            where = _backend_named(exc)
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            echo_err(
                f"error: a backend stopped answering, even after retries: {where}{type(exc).__name__}: "
                f"{detail}" + (f" (traceback: {log})" if log else "")
            )
            sys.exit(EXIT_CONFIG)
        traceback.print_exc(file=con.err if con is not None else sys.stderr)
        echo_err(
            f"error: unexpected failure ({type(exc).__name__}); the traceback above belongs in a bug "
            f"report (exit {EXIT_INTERNAL})"
        )
        sys.exit(EXIT_INTERNAL)


def _log_traceback(con) -> Path | None:
    """The traceback in the command's log file (a new one when it captured nothing); on stderr
    when the command failed before its settings said where logs go."""
    import traceback

    from keel.cli import console
    from keel.cli.common import shown_path

    path = con.log_path if con is not None else None
    if path is None and COMMAND_SETTINGS:
        path = console.log_file(COMMAND_SETTINGS[0].up.state_dir, "error")
    if path is None:
        traceback.print_exc(file=sys.stderr)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        traceback.print_exc(file=fh)
    return Path(shown_path(path))


def _backend_named(exc: BaseException) -> str:
    """``"<setting> = <address>: "`` for the backend whose address the failure names."""
    from urllib.parse import urlsplit

    from keel.config.settings import ADDRESS_KEYS, redact
    from keel.errors import chain

    if not COMMAND_SETTINGS:
        return ""
    settings = COMMAND_SETTINGS[0]
    text = " ".join(str(e) for e in chain(exc))
    for key in ADDRESS_KEYS:
        section, name = key.split(".")
        value = str(getattr(getattr(settings, section), name) or "")
        place = urlsplit(value).netloc.rsplit("@", 1)[-1] if "://" in value else value
        if place and (place in text or value in text):
            return f"{key} = {redact(value)}: "
    return ""


if __name__ == "__main__":  # pragma: no cover
    main()
