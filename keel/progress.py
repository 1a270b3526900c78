"""How a long step tells whatever front end shows it how far it got, without knowing that
front end: a step that works through many items writes ``items()`` log records on the
``keel.progress`` logger, and a fit asks ``fit_callback()`` for the Lightning callback that
shows its epochs. The keel command's console (keel.cli.console) attaches itself here while it
captures a command's output; in a library call, a test or a worker nothing is attached and
both are no-ops (an ordinary INFO record; no callback). Imports nothing heavy."""

from __future__ import annotations

import logging
from typing import Any, Protocol

PROGRESS_LOGGER = "keel.progress"


def items(step: str, done: int, total: int, unit: str) -> None:
    """Say that ``done`` of ``total`` items of ``step`` are finished (call with 0 first)."""
    logging.getLogger(PROGRESS_LOGGER).info(
        "%s: %d/%d %s", step, done, total, unit, extra={"keel_progress": (step, done, total, unit)}
    )


class Display(Protocol):
    def fit_callback(self) -> Any:
        """A Lightning callback that shows a fit's epochs (a progress bar, or epoch lines)."""


_DISPLAY: list[Display] = []


def attach(display: Display | None) -> None:
    """The front end showing this process's progress (None: none)."""
    _DISPLAY[:] = [display] if display is not None else []


def fit_callback() -> Any | None:
    """The attached front end's epoch callback, or None."""
    return _DISPLAY[0].fit_callback() if _DISPLAY else None
