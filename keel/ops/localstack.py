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
from typing import Any

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


def large_text_model(target_bytes: int, directory: Path, seed: int = 0) -> dict[str, Any]:
    """A keel text model of at least ``target_bytes`` of fp32 weights, for the transport of
    large artifacts (not for its answers): a random-init BERT 1,024 wide (BERT-large's layer
    shape, as many layers as the size needs; 256 wide with 2 layers under 64 MB), the
    all-MiniLM-L6-v2 tokenizer, three classes. Its pyfunc artifacts are written to
    ``directory``; returns them with the parts log_pyfunc needs."""
    import pandas as pd
    import torch

    from keel.model.families import family
    from keel.model.families.bert import BertNet, TextPreprocessor, encoder_options
    from keel.model.net import NetConfig
    from keel.model.objectives import KINDS
    from keel.model.runtime.pyfunc import save_artifacts
    from keel.workloads.text import default_encoder

    encoder = encoder_options(default_encoder(), layers=1, max_length=32)["encoder"]
    vocab = int(encoder["config"]["vocab_size"])
    small = target_bytes < 64 * 1024**2
    width, heads = (256, 4) if small else (1024, 16)
    per_layer = 4 * (12 * width * width + 13 * width)  # attention, feed-forward (4x), norms: fp32 bytes
    fixed = 4 * (vocab + 512 + 2) * width
    layers = 2 if small else max(1, -(-(target_bytes - fixed) // per_layer))
    config = {
        **encoder["config"],
        "hidden_size": width,
        "num_attention_heads": heads,
        "intermediate_size": 4 * width,
        "num_hidden_layers": layers,
    }
    torch.manual_seed(seed)
    net = BertNet(NetConfig([], 0, [], 0.1, 16, 3, arch="bert", encoder={**encoder, "config": config})).eval()
    pre = TextPreprocessor.fit("text", encoder)
    objective = KINDS["multiclass"].fit_labels("label", pd.Series(["a", "b", "c"]))
    artifacts = save_artifacts(family("bert"), pre, net, 0.5, directory, objective)
    example = pd.DataFrame({"text": ["a large model", "moves through the store", "in parts"]})
    a, b = pre.transform(example)
    with torch.no_grad():
        output = objective.predict(net(torch.from_numpy(a), torch.from_numpy(b)), 0.5, inputs=(a, b))
    return {
        "artifacts": artifacts,
        "example": example,
        "output": output,
        "requirements": pre.REQUIREMENTS,
        "bytes": Path(artifacts["weights"]).stat().st_size,
    }


def register_large_model(store: Any, name: str, model: dict[str, Any]) -> tuple[str, str]:
    """``model`` (``large_text_model``) logged into a new run of ``store``'s experiment through
    keel's own model logging (keel.registry.packaging.log_pyfunc: MLflow's pyfunc, its
    artifact repository, multipart where the server offers it) and registered as a version of
    ``name``: (the version, the run id)."""
    from mlflow.exceptions import MlflowException

    from keel.registry import packaging, tracking

    client = tracking.client(store)
    run = client.create_run(tracking.ensure_experiment(store), run_name=f"{name} (transport)")
    info = packaging.log_pyfunc(
        store,
        run.info.run_id,
        "pyfunc_entry.py",
        model["artifacts"],
        model["example"],
        model["output"],
        model["requirements"],
    )
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(
        name, source=info.model_uri, run_id=run.info.run_id, model_id=info.model_id
    )
    return str(mv.version), run.info.run_id
