"""What the ``keel`` command shows a person, apart from what the engines it drives log.

A lifecycle command (ingest, train, retrain, ...) prints one short line per step as it
goes and a summary at the end. Everything the engines write (Prefect, MLflow, Great
Expectations, DVC and Lightning: their logs, warnings, progress bars and prints, and what
their subprocesses write) goes to a log file in the workspace,
``<up.state_dir>/logs/<command>-<UTC time>.log``, which the command names. ``-v`` copies
that stream to the console as well. Without ``-v``, lines at WARNING, ERROR or CRITICAL
level still reach the console (tracebacks: see _LOUD).

How: the process's stdout and stderr file descriptors are pointed at a pipe, and one
thread copies the pipe into the log file (and, for ``-v`` or a warning, to the console).
keel's own lines go to the terminal through descriptors saved before the switch.
``--json``: the one JSON object is the only thing on stdout; step lines go to stderr.

Step lines come from Prefect's own task-run records ("Finished in state Completed()"),
read by a logging handler, so a flow's tasks are listed without any flow knowing. A step
that works through many items (GX on each of 12 batches) says so with ``keel.progress.items``:
a plain log record on the ``keel.progress`` logger, which a capturing console turns into a
counted line with an ETA; anywhere else it is an ordinary INFO record. Epoch lines come from
a Lightning callback (``epoch_callback``) that keel.model.training asks keel.progress for; a
capturing console attaches itself there. Importing this module imports neither Prefect nor
Lightning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from keel import progress

# a line the console shows even without -v: a log record at WARNING level or above (in the
# formats of Python's logging, Prefect, MLflow, DVC and Lightning) or an exception's last
# line. An engine's traceback stays in the log file: a failure keel expected is said in its
# own line, and an unexpected one reaches the console with its traceback from keel.cli.main
_LOUD = re.compile(r"\b(WARNING|ERROR|CRITICAL|FATAL)\b|^\w*Error: ")
# ...but not Prefect's records of a task or flow run failing: the step's FAILED line and
# keel's own error line (or traceback) say it once
_RUN_FAILED = re.compile(r"\|\s*ERROR\s*\|\s*(Task|Flow) run '")
# the exception named in a failed state's message: Failed("Task run encountered an exception X: ...")
_RAISED = re.compile(r"exception (\w+)")


@dataclass
class Console:
    """The terminal's streams (saved before capture) and what this command shows on them."""

    out: TextIO
    err: TextIO
    log_path: Path | None = None
    verbose: bool = False
    json_mode: bool = False
    tty: bool = False
    _last: float = field(default_factory=time.monotonic)
    _restore: list[Any] = field(default_factory=list)
    _expected: dict[str, Progress] = field(default_factory=dict)
    _items: dict[str, Progress] = field(default_factory=dict)
    _open: bool = False  # a line drawn in place is on the terminal, not yet ended

    @property
    def lines(self) -> TextIO:
        """Where progress and step lines go: stdout, or stderr under --json."""
        return self.err if self.json_mode else self.out

    def line(self, text: str) -> None:
        self.settle()
        self.lines.write(text + "\n")
        self.lines.flush()

    def progress_line(self, text: str) -> None:
        """A line that the next one replaces on a terminal (steps done, counts); a line of
        its own elsewhere."""
        if not self.lines.isatty():
            return self.line(text)
        self.lines.write("\r\x1b[K" + text)
        self.lines.flush()
        self._open = True

    def settle(self) -> None:
        """End the line drawn in place, so what follows starts on a line of its own."""
        if self._open:
            self._open = False
            self.lines.write("\n")
            self.lines.flush()

    def step(self, name: str, ok: bool = True, detail: str = "") -> None:
        """A finished step: on a terminal one line redrawn as steps finish (a failure keeps
        its line); elsewhere a line each."""
        now = time.monotonic()
        mark = "ok" if ok else "FAILED"
        extra = f"  {detail}" if detail else ""
        text = f"  {mark:<6} {name} ({now - self._last:.1f} s){extra}"
        if ok:
            self.progress_line(text)
        else:
            self.line(text)
        self._last = now

    def expect(self, name: str, total: int, unit: str) -> Progress:
        """Count the runs of flow or task ``name`` as they finish, out of ``total``."""
        self._expected[name] = Progress(total, unit)
        return self._expected[name]

    def counted(self, name: str) -> str:
        """`3/12 months, ETA 2m 10s` when ``name`` is expected (one more is done), else ""."""
        progress = self._expected.get(name)
        return progress.advance() if progress is not None else ""

    def item(self, step: str, done: int, total: int, unit: str) -> None:
        """``done`` of ``step``'s ``total`` items finished (0: starting, which starts its
        clock). A step of MANY items or more shows its count: on a terminal one line
        redrawn in place, otherwise a line per item but the last (the step's own line
        follows it)."""
        if done <= 0 or step not in self._items:
            self._items[step] = Progress(total, unit)
        if done <= 0 or total < MANY or (done >= total and not self.lines.isatty()):
            return
        self.progress_line(f"{'':<9}{step}  {self._items[step].advance(done)}")

    def restart_clock(self) -> None:
        """The next step's time counts from now (not from the command's imports)."""
        self._last = time.monotonic()

    def loud(self, text: str) -> None:
        self.settle()
        self.err.write(text if text.endswith("\n") else text + "\n")
        self.err.flush()

    def fit_callback(self) -> Any:
        """keel.progress.Display: the Lightning callback that shows a fit's epochs here."""
        return epoch_callback(self)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.settle()
        for undo in reversed(self._restore):
            with contextlib.suppress(Exception):
                undo()
        self._restore.clear()


@dataclass
class Progress:
    """Done out of total, and an ETA from the mean time per item so far."""

    total: int
    unit: str
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def advance(self, to: int | None = None) -> str:
        self.done = self.done + 1 if to is None else to
        return f"{self.done}/{self.total} {self.unit}, {eta(self.started, self.done, self.total)}"


def eta(started: float, done: int, total: int) -> str:
    """`ETA 2m 10s` (the mean time per item so far, times the items left), `done` at the end."""
    if done >= total:
        return "done"
    if done <= 0:
        return "ETA -"
    left = round((time.monotonic() - started) / done * (total - done))
    return f"ETA {left // 60}m {left % 60:02d}s" if left >= 60 else f"ETA {left}s"


# a step with this many items or more gets a counted line per item (3 demo batches: none)
MANY = 4
PROGRESS_LOGGER = progress.PROGRESS_LOGGER
_CURRENT: Console | None = None


def current() -> Console | None:
    """The console of this keel command, or None (a library call, a test, a worker)."""
    return _CURRENT


def capture(log_path: Path, *, verbose: bool = False, json_mode: bool = False) -> Console:
    """Point this process's stdout/stderr (and so its children's) at ``log_path``; return
    the console keel writes to. ``verbose``: the same stream on the console too."""
    global _CURRENT
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    out = os.fdopen(saved_out, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    err = os.fdopen(saved_err, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    console = Console(out, err, log_path, verbose, json_mode, tty=err.isatty())
    log = log_path.open("ab", buffering=0)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, log, console), name="keel-console", daemon=True)
    pump.start()

    def restore() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)  # closes this process's write ends of the pipe
        os.dup2(saved_err, 2)
        pump.join(timeout=2)  # a child still holding the pipe must not hold the exit up
        log.close()

    console._restore.append(restore)
    console._restore.append(lambda: progress.attach(None))
    _CURRENT = console
    progress.attach(console)  # keel.model.training asks it for the epoch callback
    return console


def _pump(fd: int, log: Any, console: Console) -> None:
    """Copy the captured stream into the log file; to the console every line with -v,
    otherwise only the loud ones (warnings, errors, an exception's last line)."""
    pending = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        log.write(chunk)
        pending += chunk
        *whole, pending = pending.split(b"\n")
        for raw in whole:
            text = raw.decode("utf-8", "replace")
            if console.verbose or (_LOUD.search(text) and not _RUN_FAILED.search(text)):
                with contextlib.suppress(Exception):
                    console.loud(text)
    os.close(fd)


def log_file(state_dir: Path, command: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return state_dir / "logs" / f"{command}-{stamp}-{os.getpid()}.log"


class _StepHandler(logging.Handler):
    """Prefect's task-run records -> one console line per finished task."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("Finished in state"):
            return
        name = getattr(record, "task_name", None) or getattr(record, "task_run_name", "?")
        ok = "Completed" in message or "Cached" in message
        detail = "" if ok else _failure(message.removeprefix("Finished in state "))
        self.console.step(str(name), ok, self.console.counted(str(name)) or detail)


def _failure(state: str) -> str:
    """A failed state, short: the exception's name (its message follows from keel), else
    the state's first 120 characters."""
    raised = _RAISED.search(state)
    return raised.group(1) if raised else state.splitlines()[0][:120]


class _FlowCountHandler(logging.Handler):
    """Prefect's flow-run records -> a counted line for the (sub)flows a command expects;
    a flow run's start restarts the step clock (its first step's time is the step's own,
    not the flow run's creation)."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        message, name = record.getMessage(), str(getattr(record, "flow_name", ""))
        if message.startswith("Beginning flow run"):
            self.console.restart_clock()
        elif message.startswith("Finished in state") and (detail := self.console.counted(name)):
            self.console.step(name, "Completed" in message, detail)


class _ItemHandler(logging.Handler):
    """``progress()`` records -> the console's counted item lines."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        item = getattr(record, "keel_progress", None)
        if item is not None:
            step, done, total, unit = item
            self.console.item(str(step), int(done), int(total), str(unit))


def follow_prefect(console: Console) -> None:
    """List each Prefect task run as it finishes (call after Prefect has configured logging),
    and the items of steps that report them (``progress``)."""
    items = logging.getLogger(PROGRESS_LOGGER)
    items.setLevel(logging.INFO)
    if not any(isinstance(h, _ItemHandler) for h in items.handlers):
        items.addHandler(_ItemHandler(console))
    task_runs = logging.getLogger("prefect.task_runs")
    if task_runs.getEffectiveLevel() > logging.INFO:
        task_runs.setLevel(logging.INFO)  # the records this reads; where they go is unchanged
    if not any(isinstance(h, _StepHandler) for h in task_runs.handlers):
        task_runs.addHandler(_StepHandler(console))
    flow_runs = logging.getLogger("prefect.flow_runs")
    if flow_runs.getEffectiveLevel() > logging.INFO:
        flow_runs.setLevel(logging.INFO)
    if not any(isinstance(h, _FlowCountHandler) for h in flow_runs.handlers):
        flow_runs.addHandler(_FlowCountHandler(console))


def watch(console: Console, name: str, total: int, unit: str, count: Any, every: float = 2.0) -> None:
    """Count work that finishes outside this process (tune's trials in a process pool or on
    Dask): a daemon thread calls ``count()`` every ``every`` s and prints a line as it rises.
    The first answer is the baseline (a resumed study's earlier trials are not this run's),
    so nothing is asked of the store before the command's own work starts."""
    progress = Progress(total, unit)

    def poll() -> None:
        seen, base = 0, None
        while seen < total:
            time.sleep(every)
            with contextlib.suppress(Exception):  # a busy store: ask again next time
                value = int(count())
                base = value if base is None else base
                now = min(value - base, total)
                if now > seen:
                    seen = now
                    console.progress_line(f"  {'ok':<6} {name}  {progress.advance(now)}")

    threading.Thread(target=poll, name="keel-progress", daemon=True).start()


def epoch_callback(console: Console) -> Any:
    """A Lightning callback: on a terminal, Lightning's rich progress bar drawn on the
    console; off one, one line per epoch with its losses."""
    import lightning.pytorch as pl

    if console.tty and not console.json_mode:
        from lightning.pytorch.callbacks import RichProgressBar

        class Bar(RichProgressBar):
            def setup(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
                console.settle()  # the bar starts below the step line drawn in place
                super().setup(trainer, module, stage)

        return Bar(console_kwargs={"file": console.err, "force_terminal": True})

    class EpochLines(pl.Callback):
        """An epoch's line once its metrics are all logged: the module logs train/loss in
        its own on_train_epoch_end, after the callbacks' one; so when the next epoch
        starts, or training ends. The ETA assumes every epoch takes the mean so far (early
        stopping ends sooner)."""

        started = time.monotonic()

        def _line(self, trainer: pl.Trainer, epoch: int) -> None:
            shown = {
                k: float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith(("train/", "val/")) and v.numel() == 1
            }
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())[:4])
            left = eta(self.started, epoch, trainer.max_epochs or epoch)
            console.line(f"         epoch {epoch}/{trainer.max_epochs}  {metrics}  ({left})")

        def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.started = time.monotonic()

        def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if trainer.current_epoch > 0:
                self._line(trainer, trainer.current_epoch)

        def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self._line(trainer, trainer.current_epoch)

    return EpochLines()
