"""Throwaway scaled backends on loopback, without Docker, for tests and benchmarks:
PostgreSQL from Debian's packages (run as the unprivileged ``postgres`` user when called
as root: postgres refuses root), moto's standalone S3 server, an MLflow server on
Postgres with S3 artifacts, and a Prefect server on Postgres. Credentials reach the
servers through environment variables only (PGPASSWORD, AWS_*), never inside a URI.

Production uses the real services: infra/docker-compose.yml or infra/k8s/.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from keel.ops.services import wait_http


def pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM a server this process started; SIGKILL it after 20 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Postgres:
    """A throwaway PostgreSQL cluster on a free loopback port, with a password-protected
    role `keel` and the databases `mlflow` and `prefect`."""

    user = "keel"

    def __init__(self, port: int):
        self.port, self.password = port, secrets.token_hex(12)
        found = pg_bin()
        if found is None:
            raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
        self.bin: Path = found
        self.root = Path(tempfile.mkdtemp(prefix="keel-pg-"))  # outside root-only tmp dirs

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> Postgres:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run(
            self._as_owner(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.root / "data"),
                    "-U",
                    self.user,
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        pwfile.unlink()
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            self._as_owner(
                [
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.root / "data"),
                    "-l",
                    str(self.root / "server.log"),
                    "-o",
                    opts,
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for db in ("mlflow", "prefect"):
            self.sql(f"CREATE DATABASE {db}", "postgres")
        return self

    def sql(self, query: str, db: str) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=db
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def stop(self) -> None:
        subprocess.run(
            self._as_owner(
                [str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


class ScaledBackends:
    """Postgres + S3 (moto) + MLflow server (Postgres, S3 artifacts) + Prefect server (Postgres)."""

    def __init__(self, root: Path, ports: Callable[[], int]):
        self.root = root
        self.pg = Postgres(ports())
        self.s3_port, self.mlflow_port, self.prefect_port = ports(), ports(), ports()
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"
        self.mlflow_url = f"http://127.0.0.1:{self.mlflow_port}"
        self.prefect_api = f"http://127.0.0.1:{self.prefect_port}/api"
        self.aws_secret = secrets.token_hex(16)
        self.procs: list[subprocess.Popen] = []
        self.timings: dict[str, float] = {}

    @property
    def aws_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "keel-test",
            "AWS_SECRET_ACCESS_KEY": self.aws_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        log = self.root / f"{name}.log"
        proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env={**os.environ, **env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc, log

    def start(self) -> ScaledBackends:
        import boto3

        t0 = time.monotonic()
        self.pg.start()
        self.timings["postgres"] = time.monotonic() - t0
        s3, s3_log = self._spawn(
            "s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)], {}
        )
        wait_http(f"{self.s3_url}/moto-api/", s3, s3_log, time.monotonic() + 120, "the S3 server")
        client = boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            **{
                "aws_access_key_id": "keel-test",
                "aws_secret_access_key": self.aws_secret,
                "region_name": "us-east-1",
            },
        )
        for bucket in ("keel-mlflow", "keel-dvc"):
            client.create_bucket(Bucket=bucket)
        self.s3 = client
        pg = f"127.0.0.1:{self.pg.port}"
        from keel.ops.services import MLFLOW_SERVER_DEFAULTS

        # the password reaches the servers as PGPASSWORD, never inside a URI
        mlflow, ml_log = self._spawn(
            "mlflow",
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"postgresql://keel@{pg}/mlflow",
                "--serve-artifacts",
                "--artifacts-destination",
                "s3://keel-mlflow/artifacts",
            ],
            {
                **MLFLOW_SERVER_DEFAULTS,
                **self.aws_env,
                "PGPASSWORD": self.pg.password,
                "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            },
        )
        prefect, pf_log = self._spawn(
            "prefect",
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.prefect_port),
            ],
            {
                "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://keel@{pg}/prefect",
                "PGPASSWORD": self.pg.password,
                "PREFECT_HOME": str(self.root / "prefect-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            },
        )
        wait_http(f"{self.mlflow_url}/health", mlflow, ml_log, time.monotonic() + 180, "the MLflow server")
        wait_http(f"{self.prefect_api}/health", prefect, pf_log, time.monotonic() + 180, "the Prefect server")
        self.timings["all up"] = time.monotonic() - t0
        return self

    def keel_env(self) -> dict[str, str]:
        """What a user sets to point keel at these backends: addresses + credentials."""
        return {
            **self.aws_env,
            "KEEL_MLFLOW__TRACKING_URI": self.mlflow_url,
            "KEEL_PREFECT__API_URL": self.prefect_api,
            "KEEL_DVC__REMOTE": "s3",
            "KEEL_DVC__REMOTE_URL": "s3://keel-dvc/store",
            "KEEL_DVC__ENDPOINT_URL": self.s3_url,
        }

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        self.pg.stop()
