"""Servability check, run in a fresh process: load a model (a local copy the caller fetched
from the registry, or any MLflow model URI) and predict on rows of its own input example.

``run_fresh`` forks that process from a fork server: a clean interpreter
(``python -m keel.registry.servability --fork-server``) that has imported MLflow's loading API and
nothing of keel's training code, torch or any model's modules, then forks one child per
check. The child loads the model's code, weights and dependencies from scratch, as before,
but a long-lived process (tests, the guardrail, a scheduler) no longer pays MLflow's ~6 s
import on every promotion. The server is single-threaded (so forking it is safe), answers
one request at a time and exits when its parent closes its stdin or dies.
``python -m keel.registry.servability <path-or-uri> [rows]`` runs the same check in a new
interpreter; prints one JSON line; exit 0 only when the model loaded and predicted."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

# Serving and this check load models with MLflow's pickle deserialization off: keel's
# models are models-from-code (the pyfunc is built from keel/model/runtime/pyfunc_entry.py, the weights
# read with torch.load(weights_only=True)), so only a cloudpickled model is refused.
SAFE_LOADING = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}


def check(uri: str, rows: int) -> dict:
    import mlflow
    import pandas as pd
    from mlflow.models import Model

    start = time.perf_counter()
    local = uri if Path(uri).is_dir() else mlflow.artifacts.download_artifacts(uri)
    # suppress_warnings: MLflow's requirements-vs-installed comparison (~2.7 s of package
    # scanning) only logs; a model that cannot load or predict fails below either way
    model = mlflow.pyfunc.load_model(local, suppress_warnings=True)
    example = Model.load(local).load_input_example(local)
    if not isinstance(example, pd.DataFrame):
        raise ValueError(f"{uri} has no input example table to predict on (got {type(example).__name__})")
    signature = Model.load(local).signature
    if signature is None or signature.outputs is None:
        raise ValueError(f"{uri} has no output signature")
    expected = signature.outputs.input_names()
    out = model.predict(example.head(rows))
    if len(out) != min(rows, len(example)) or list(out.columns) != expected:
        raise ValueError(
            f"{uri} predicted {len(out)} rows with columns {list(out.columns)}; its signature says {expected}"
        )
    return {"ok": True, "uri": uri, "rows": len(out), "seconds": round(time.perf_counter() - start, 3)}


def run_fresh(local: str, rows: int, env: dict[str, str], log: Path, timeout: float = 600) -> dict[str, Any]:
    """``check(local, rows)`` in a child forked from this process's fork server, with exactly
    ``env`` as its environment and its stdout/stderr in ``log``."""
    answer = log.with_name(log.name + ".json")  # the child's result
    request = {"local": local, "rows": rows, "env": env, "log": str(log), "result": str(answer)}
    with _LOCK:
        try:
            code = _server().ask(request, timeout)
        except TimeoutError:
            _stop_server()
            return {"ok": False, "error": f"the check gave no answer in {timeout:.0f} s"}
    result = json.loads(answer.read_text()) if answer.exists() else {}
    if code != 0 or not result.get("ok"):
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        result = {**result, "ok": False, "error": result.get("error") or f"exit code {code}: {tail}"}
    return result


class _ForkServer:
    """The parent's end: one request line in, one ``{"exit": code}`` line out."""

    def __init__(self) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keel.registry.servability", "--fork-server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a stuck check is killed with its server's process group
            text=True,
        )

    def ask(self, request: dict[str, Any], timeout: float) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = _readline(self.proc.stdout, timeout)
        if not line:
            raise RuntimeError(f"the servability fork server exited (code {self.proc.wait()})")
        return int(json.loads(line)["exit"])

    def alive(self) -> bool:
        return self.proc.poll() is None


def _readline(stream: IO[str], timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError
    return stream.readline()


_LOCK = threading.Lock()
_SERVER: _ForkServer | None = None


def _server() -> _ForkServer:
    global _SERVER
    if _SERVER is None or not _SERVER.alive():
        _SERVER = _ForkServer()
    return _SERVER


def _stop_server() -> None:
    import contextlib
    import signal

    global _SERVER
    if _SERVER is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(_SERVER.proc.pid, signal.SIGKILL)
        _SERVER.proc.wait()
        _SERVER = None


def warm() -> None:
    """Start the fork server now, so that its import of MLflow overlaps other work."""
    with _LOCK:
        _server()


def serve() -> int:
    """The server's side: preload MLflow, then fork one child per request line on stdin."""
    # the preload: imported once, inherited by every child
    import mlflow.models
    import mlflow.pyfunc  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)  # never returns
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({"exit": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()
    return 0


def _child(request: dict[str, Any]) -> None:
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # the server's request stream is not the child's
        out = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.environ.clear()
        os.environ.update(request["env"])
        try:
            result = check(request["local"], int(request["rows"]))
            code = 0
        except Exception as exc:  # any failure to load or predict blocks the alias move
            result = {"ok": False, "uri": request["local"], "error": f"{type(exc).__name__}: {exc}"[:2000]}
        Path(request["result"]).write_text(json.dumps(result))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str]) -> int:
    if argv == ["--fork-server"]:
        return serve()
    uri, rows = argv[0], int(argv[1]) if len(argv) > 1 else 5
    try:
        print(json.dumps(check(uri, rows)))
        return 0
    except Exception as exc:  # any failure to load or predict blocks the alias move
        print(json.dumps({"ok": False, "uri": uri, "error": f"{type(exc).__name__}: {exc}"[:2000]}))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
