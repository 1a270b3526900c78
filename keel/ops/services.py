"""``keel up`` / ``keel down``: the servers a workspace schedules on, on loopback.

``up`` starts three processes, each the leader of its own process group:

- ``prefect server start`` (its database under ``<up.state_dir>/prefect``);
- ``mlflow server`` on the workspace's own store (the UI over the same sqlite + artifacts);
- ``python -m flows.deployments``: Prefect's runner, which registers keel's deployments
  with their schedules and executes their runs.

It waits until each answers, writes ``<up.state_dir>/up.json`` (PIDs, process start
times, URLs, logs) and prints the URLs. ``down`` stops exactly those processes, by PID,
checking each PID still belongs to the process ``up`` started, and their children.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from keel.config.settings import Settings
from keel.errors import KeelError

STATE_FILE = "up.json"
RETRAIN_DEPLOYMENT = "keel-scheduled-retrain/monthly"  # flows/deployments.py defines both
MONITOR_DEPLOYMENT = "keel-drift-monitor/daily"


class ServiceError(KeelError, RuntimeError):
    """A service keel up could not start, or keel down could not stop."""


@dataclass(frozen=True)
class Service:
    name: str
    pid: int
    started: float  # the process's start time (psutil): guards against PID reuse
    url: str
    log: str


@dataclass(frozen=True)
class Up:
    workspace: str
    prefect_api: str
    services: list[Service]

    def url(self, name: str) -> str:
        return next(s.url for s in self.services if s.name == name)


# MLflow 3's server also starts a GenAI job runner (a huey consumer per job type, ~10
# processes polling, together ~2 cores' worth of CPU on an idle 2-core machine): keel runs no
# server-side jobs, so its servers start without it unless the environment asks for it.
MLFLOW_SERVER_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def state_path(settings: Settings) -> Path:
    return settings.up.state_dir / STATE_FILE


def read_state(settings: Settings) -> Up | None:
    path = state_path(settings)
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    return Up(raw["workspace"], raw["prefect_api"], [Service(**s) for s in raw["services"]])


def _process(service: Service):
    """The live process of a recorded service, or None (gone, or the PID was reused)."""
    import psutil

    try:
        proc = psutil.Process(service.pid)
        if abs(proc.create_time() - service.started) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.NoSuchProcess:
        return None


def alive(service: Service) -> bool:
    """Whether a recorded service's process still runs (and is the one keel started)."""
    return _process(service) is not None


def running(settings: Settings) -> Up | None:
    """The services of a live ``keel up`` for this workspace, or None."""
    up = read_state(settings)
    if up and any(_process(s) for s in up.services):
        return up
    return None


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def wait_http(url: str, proc: subprocess.Popen, log: Path, deadline: float, name: str) -> None:
    """Until ``url`` answers; a clear error with the log's tail when the process exits."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"{name} exited with code {proc.returncode}; its log: {log}\n"
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise ServiceError(f"{name} did not answer at {url} in time; its log: {log}")


def _wait_deployments(api: str, names: list[str], proc: subprocess.Popen, log: Path, deadline: float) -> None:
    for name in names:
        wait_http(f"{api}/deployments/name/{name}", proc, log, deadline, "the deployment runner")


def _spawn(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _record(name: str, proc: subprocess.Popen, url: str, log: Path) -> Service:
    import psutil

    return Service(name, proc.pid, psutil.Process(proc.pid).create_time(), url, str(log))


AUTH_INI = """[mlflow]
default_permission = EDIT
grant_default_workspace_access = true
database_uri = sqlite:///{db}
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


def auth_environment(state: Path, admin_password: str, secret: str | None = None) -> dict[str, str]:
    """The environment that runs ``mlflow server --app-name basic-auth`` on keel's terms: its
    users in ``<state>/mlflow-auth.db``; every authenticated user may read and write (EDIT:
    trainers register versions), anonymous requests get nothing; keel's [promotion]
    reviewers decide who moves ``champion``. The admin is created on first start with
    ``admin_password`` (MLflow's MLFLOW_AUTH_ADMIN_PASSWORD), never a default one. The CSRF
    secret (MLFLOW_FLASK_SERVER_SECRET_KEY) is the user's, or one kept in ``state`` (0600)."""
    import secrets

    if not admin_password:
        raise ServiceError(
            "keel up --auth: set MLFLOW_AUTH_ADMIN_PASSWORD (the MLflow admin password; never a default one)"
        )
    state.mkdir(parents=True, exist_ok=True)
    ini = state / "mlflow-auth.ini"
    admin = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
    ini.write_text(AUTH_INI.format(db=state / "mlflow-auth.db", admin=admin))
    if secret is None:
        kept = state / "mlflow-flask-secret"
        if not kept.exists():
            kept.touch(mode=0o600)
            kept.write_text(secrets.token_hex(32))
        secret = os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or kept.read_text()
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": admin,
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret,
    }


def up(settings: Settings, environ: dict[str, str] | None = None, auth: bool = False) -> Up:
    """Start the Prefect server, the MLflow server and the deployment runner; return
    their URLs once each answers. Anything started is stopped again if one fails."""
    if running(settings):
        raise ServiceError(
            f"keel is already up for {settings.workspace} ({state_path(settings)}): run 'keel down' first"
        )
    cfg = settings.up
    for key, port in (("up.prefect_port", cfg.prefect_port), ("up.mlflow_port", cfg.mlflow_port)):
        if not _port_free(cfg.host, port):
            raise ServiceError(
                f"{key}: {cfg.host}:{port} is already in use; pick another port "
                f"(KEEL_{key.upper().replace('.', '__')})"
            )
    if not settings.mlflow.tracking_uri.startswith("sqlite:"):
        raise ServiceError(
            f"mlflow.tracking_uri is {settings.mlflow.tracking_uri}: keel up serves the "
            f"workspace's own sqlite store; for a remote MLflow, start only Prefect"
        )
    state, logs = cfg.state_dir, cfg.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (settings.workspace / "mlflow").mkdir(exist_ok=True)
    base = {**(environ if environ is not None else os.environ)}
    base.update(
        {
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DVC_NO_ANALYTICS": "1",
            "PREFECT_HOME": str(state / "prefect"),
        }
    )
    prefect_url = f"http://{cfg.host}:{cfg.prefect_port}"
    api = f"{prefect_url}/api"
    mlflow_url = f"http://{cfg.host}:{cfg.mlflow_port}"
    # --auth: refused before anything starts when the admin password is missing
    mlflow_env = {**MLFLOW_SERVER_DEFAULTS, **base}
    if auth:
        mlflow_env.update(auth_environment(state, base.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")))
    deadline = time.monotonic() + cfg.ready_timeout_s
    started: list[tuple[str, subprocess.Popen, str, Path]] = []
    try:
        log = logs / "prefect-server.log"
        env = {k: v for k, v in base.items() if k != "PREFECT_API_URL"}
        started.append(
            (
                "prefect-server",
                _spawn(
                    [
                        sys.executable,
                        "-m",
                        "prefect",
                        "server",
                        "start",
                        "--host",
                        cfg.host,
                        "--port",
                        str(cfg.prefect_port),
                    ],
                    log,
                    env,
                    settings.workspace,
                ),
                prefect_url,
                log,
            )
        )
        log = logs / "mlflow-server.log"
        started.append(
            (
                "mlflow-server",
                _spawn(
                    [
                        sys.executable,
                        "-m",
                        "mlflow",
                        "server",
                        "--host",
                        cfg.host,
                        "--port",
                        str(cfg.mlflow_port),
                        "--workers",
                        "1",
                        "--backend-store-uri",
                        settings.mlflow.tracking_uri,
                        "--default-artifact-root",
                        settings.mlflow.artifact_root,
                        *(["--app-name", "basic-auth"] if auth else []),
                    ],
                    log,
                    mlflow_env,
                    settings.workspace,
                ),
                mlflow_url,
                log,
            )
        )
        for name, proc, url, log in list(started):
            health = f"{api}/health" if name == "prefect-server" else f"{url}/health"
            wait_http(health, proc, log, deadline, name)
        log = logs / "runner.log"
        cmd = [sys.executable, "-m", "flows.deployments", "--workspace", str(settings.workspace)]
        runner = _spawn(
            cmd + (["--profile", settings.profile] if settings.profile else []),
            log,
            {**base, "PREFECT_API_URL": api},
            settings.workspace,
        )
        started.append(("runner", runner, api, log))
        _wait_deployments(api, [RETRAIN_DEPLOYMENT, MONITOR_DEPLOYMENT], runner, log, deadline)
        services = [_record(name, proc, url, log) for name, proc, url, log in started]
    except BaseException:
        for _, proc, _, _ in reversed(started):
            _stop_group(proc.pid, timeout=20)
        raise
    result = Up(str(settings.workspace), api, services)
    state_path(settings).write_text(json.dumps(asdict(result), indent=2))
    return result


def _stop_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group ``pid`` leads (started with start_new_session); SIGKILL
    whatever is left after ``timeout``."""
    import psutil

    try:
        members = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        members = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    for m in members:  # children that left the group
        try:
            if os.getpgid(m.pid) != pid:
                m.terminate()
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    _, alive = psutil.wait_procs(members, timeout=timeout)
    for m in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            m.kill()
    psutil.wait_procs(alive, timeout=5)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child


def down(settings: Settings, timeout: float = 30) -> list[Service]:
    """Stop what ``keel up`` started (runner first), by PID; return what was stopped."""
    up_state = read_state(settings)
    if up_state is None:
        return []
    stopped = []
    for service in reversed(up_state.services):
        if _process(service) is not None:
            _stop_group(service.pid, timeout)
            stopped.append(service)
    state_path(settings).unlink(missing_ok=True)
    return stopped
