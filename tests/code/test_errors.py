"""Which failures are the user's, which can pass on a retry, and what the command does
with the rest: real exceptions from the libraries keel drives, real Prefect retries."""

import os
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from keel.data.validation import DataValidationError
from keel.data.workspace import DataVersionError
from keel.errors import (
    EXIT_INTERNAL,
    ConfigError,
    InputError,
    KeelError,
    NotFoundError,
    PromotionError,
    is_transient,
)


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: nothing listens there


def _real_connection_error() -> BaseException:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{_refused_port()}/health", timeout=2)
    except urllib.error.URLError as exc:
        return exc
    raise AssertionError("a closed port answered")


def _locked_sqlite(tmp_path) -> BaseException:
    db = tmp_path / "x.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    try:
        sqlite3.connect(db, timeout=0).execute("insert into t values (1)")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        holder.execute("rollback")
        holder.close()
    raise AssertionError("the database was not locked")


def test_network_and_lock_failures_are_transient(tmp_path):
    refused = _real_connection_error()
    assert is_transient(refused)
    assert is_transient(_locked_sqlite(tmp_path))
    try:
        raise RuntimeError("dvc push failed") from ConnectionResetError("peer reset")
    except RuntimeError as wrapped:
        assert is_transient(wrapped)  # the cause decides
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))


def test_user_errors_and_bugs_are_not_transient():
    for exc in (
        DataVersionError("data.dvc names a version the remote lacks"),
        DataValidationError("data/2013-01.parquet: column 'origin' ...", ()),
        PromotionError("v3 was not blessed"),
        ConfigError("invalid settings"),
        NotFoundError("model 'm' has no version '9'"),
        InputError("month '2013-13' is not of the form YYYY-MM"),
        KeyError("carrier"),
        ValueError("could not convert string to float"),
        ZeroDivisionError("division by zero"),
    ):
        assert not is_transient(exc), exc
    try:  # a user-facing verdict stays final even when a network error sits behind it
        raise PromotionError("lock not acquired") from ConnectionError("x")
    except PromotionError as exc:
        assert not is_transient(exc)
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    assert not is_transient(MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST))


def test_keel_errors_carry_their_exit_codes():
    assert issubclass(ConfigError, KeelError) and ConfigError.exit_code == 2
    for cls in (DataVersionError, DataValidationError, PromotionError, InputError, NotFoundError):
        assert issubclass(cls, KeelError) and cls.exit_code == 1


def test_every_retried_task_retries_only_transient_errors():
    import importlib
    import pkgutil

    from prefect import Task

    import tasks
    from keel.errors import retry_transient

    retried = []
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, Task) and obj.retries:
                retried.append(obj.name)
                assert obj.retry_condition_fn is retry_transient, obj.name
    assert {"start-run", "verify-remote", "load-lineage", "record-gate"} <= set(retried)


@pytest.mark.slow
def test_prefect_retries_a_transient_failure_and_not_a_deterministic_one():
    from prefect import flow, task

    from keel.errors import retry_transient

    calls = {"deterministic": 0, "transient": 0}

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def deterministic():
        calls["deterministic"] += 1
        raise DataVersionError("the remote does not hold md5 abc.dir")

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def flaky():
        calls["transient"] += 1
        if calls["transient"] < 3:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        return "ok"

    @flow
    def both():
        with pytest.raises(DataVersionError):
            deterministic()
        return flaky()

    assert both() == "ok"
    assert calls == {"deterministic": 1, "transient": 3}


def _main(script: str, *args: str) -> subprocess.CompletedProcess:
    """keel's console-script entry (keel.cli:main) with one extra command from the test."""
    code = (
        "import sys\nfrom keel.cli import app, main\n"
        f"{script}\n"
        f"sys.argv = ['keel', *{list(args)!r}]\nmain()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_an_unexpected_failure_prints_its_traceback_and_exits_70():
    proc = _main(
        "@app.command()\ndef boom():\n    import pandas as pd\n    pd.DataFrame({'a': [1]})['missing']\n",
        "boom",
    )
    assert proc.returncode == EXIT_INTERNAL == 70
    assert "Traceback (most recent call last)" in proc.stderr and "KeyError: 'missing'" in proc.stderr
    assert "unexpected failure (KeyError)" in proc.stderr


def test_a_user_error_is_one_line_and_its_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(tmp_path), "ingest", "--month", "2013-13"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: month '2013-13' is not of the form YYYY-MM"
    assert "Traceback" not in proc.stderr


def test_a_backend_that_stops_answering_is_not_a_bug_and_exits_2():
    port = _refused_port()
    proc = _main(
        "@app.command()\ndef fetch():\n    import urllib.request\n"
        f"    urllib.request.urlopen('http://127.0.0.1:{port}/api/health', timeout=2)\n",
        "fetch",
    )
    assert proc.returncode == 2
    assert "a backend stopped answering, even after retries" in proc.stderr and "Traceback" in proc.stderr


def test_a_backend_that_stops_answering_mid_command_is_one_line_naming_the_setting(tmp_path):
    """keel rollback against an MLflow server that passes the pre-flight check (GET /health)
    and then answers 503 to everything (MLflow's own retries shortened): exit 2, one error
    line naming mlflow.tracking_uri and its address, no traceback on the console; the
    traceback is in the log file the line names."""
    import http.server
    import re
    import threading

    class Flaky(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            ok = self.path.rstrip("/").endswith("/health")
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"down")

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "keel.toml").write_text(f'[workload]\nname = "synthetic"\n[mlflow]\ntracking_uri = "{uri}"\n')
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "keel.cli", "-w", str(ws), "rollback", "--reason", "x"],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            cwd=ws,
        )
    finally:
        server.shutdown()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert f"a backend stopped answering, even after retries: mlflow.tracking_uri = {uri}: " in errors[0]
    log = re.search(r"\(traceback: (.+)\)$", errors[0])
    assert log, errors[0]
    assert "Traceback (most recent call last)" in (ws / log.group(1)).read_text()
