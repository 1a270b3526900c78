"""The Prefect API server of one keel command, when no server is configured or up.

Without ``prefect.api_url`` (and no ``keel up``), Prefect would start its own temporary
server at the first flow run and stop it from an ``atexit`` hook: a SIGKILLed keel
leaves that server running for good. keel starts the same server itself instead
(``prefect.ephemeral = "managed"``), as its child:

- it starts when the command reads its settings, so its ~5 s start overlaps the import
  of the ML stack instead of following it;
- the server process watches its parent: on Linux the kernel kills it the moment the
  parent dies (``PR_SET_PDEATHSIG``), and on every OS a watchdog thread exits it within
  half a second of being re-parented. SIGKILL included, no server is left behind;
- the command stops it on exit; its database is Prefect's own (``PREFECT_HOME``), so
  migrations run once per machine, as with Prefect's own temporary server.

``python -m keel.ops.prefect_server --port P --parent PID`` is the server side. Importing
this module starts nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from keel.errors import KeelError

SERVER_ENV = {  # what Prefect's own temporary server runs with (no UI, ephemeral services)
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
WATCH_INTERVAL_S = 0.5


class PrefectServerError(KeelError, RuntimeError):
    """The command's Prefect server did not start."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class CommandServer:
    """A Prefect server owned by this process (see the module docstring)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self, timeout: float) -> float:
        """Block until /health answers; return the seconds since the start."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrefectServerError(
                    f"the command's Prefect server exited with code {self.proc.returncode}; "
                    f"its log: {self.log}\n" + self.log.read_text(errors="replace")[-2000:]
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2):
                    return time.monotonic() - self.started
            except OSError:
                time.sleep(0.1)
        raise PrefectServerError(
            f"the command's Prefect server did not answer at {self.api_url} within {timeout:.0f} s "
            f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); its log: {self.log}"
        )

    def stop(self) -> None:
        """Stop the server; its log goes with it unless it ended on its own (a failure)."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.unlink(missing_ok=True)


def start(log_dir: Path) -> CommandServer:
    """Start the server as a child of this process; do not wait for it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = log_dir / f"prefect-server-{os.getpid()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keel.ops.prefect_server",
                "--port",
                str(port),
                "--parent",
                str(os.getpid()),
            ],
            env={**os.environ, **SERVER_ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for keel reaches keel, which stops it
        )
    return CommandServer(proc, port, log)


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGKILL to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _watch_parent(parent: int) -> None:
    """Every OS: exit as soon as this process is no longer ``parent``'s child."""
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(WATCH_INTERVAL_S)


def serve(port: int, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()
    import uvicorn

    uvicorn.run(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="on",
    )


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="The Prefect API server of one keel command.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port, args.parent)


if __name__ == "__main__":
    main()
