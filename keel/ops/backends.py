"""Before any work: every backend the settings name answers, or one clear error per
backend naming the setting and the address (never a credential).

Embedded defaults (sqlite, local paths, no Prefect server) need no network and are only
checked for what a local path can get wrong. Credentials come from the environment:
MLFLOW_TRACKING_USERNAME/PASSWORD, PGPASSWORD, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
PREFECT_API_KEY.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

from keel.config.settings import Settings, redact
from keel.errors import ConfigError


class BackendError(ConfigError):
    """A backend named in the settings is missing or does not answer."""


def _http(key: str, url: str, health: str, what: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(health, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):  # it answers; auth is the client's business (env vars)
            return None
        return f"{key} = {redact(url)}: {what} answered HTTP {exc.code} at {redact(health)}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{key} = {redact(url)}: cannot reach {what} ({reason})"


def _database(key: str, uri: str, timeout: float) -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": int(timeout)})
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # driver errors vary; the first line says what went wrong
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{key} = {redact(uri)}: cannot connect to the database ({first})"


def _bucket(key: str, url: str, endpoint: str | None, timeout: float) -> str | None:
    import boto3
    import botocore.exceptions as bx
    from botocore.config import Config

    bucket = urlsplit(url).netloc
    where = f" at {endpoint}" if endpoint else ""
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint or None,
            config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}),
        )
        s3.head_bucket(Bucket=bucket)
        return None
    except bx.NoCredentialsError:
        return (
            f"{key} = {url}: no S3 credentials: set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY (or an AWS profile) in the environment"
        )
    except bx.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        if code in ("404", "NoSuchBucket"):
            return f"{key} = {url}: bucket '{bucket}' does not exist{where}"
        return f"{key} = {url}: S3 refused access to bucket '{bucket}'{where} ({code})"
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.BotoCoreError) as exc:
        return f"{key} = {url}: cannot reach the S3 endpoint{where or ' (AWS)'} ({exc})"


def problems(settings: Settings, timeout: float = 5.0) -> list[str]:
    """One line per backend that is missing or does not answer."""
    import os

    found: list[str | None] = []
    ml = settings.mlflow
    for key, uri in (("mlflow.tracking_uri", ml.tracking_uri), ("mlflow.registry_uri", ml.registry_uri)):
        if key == "mlflow.registry_uri" and uri == ml.tracking_uri:
            continue
        scheme = urlsplit(uri).scheme
        if scheme in ("http", "https"):
            found.append(_http(key, uri, uri.rstrip("/") + "/health", "the MLflow server", timeout))
        elif scheme.startswith(("postgresql", "mysql", "mssql")):
            found.append(_database(key, uri, timeout))
    if ml.artifact_root.startswith("s3://"):
        found.append(
            _bucket(
                "mlflow.artifact_root", ml.artifact_root, os.environ.get("MLFLOW_S3_ENDPOINT_URL"), timeout
            )
        )
    if settings.prefect.api_url:
        api = settings.prefect.api_url
        found.append(
            _http("prefect.api_url", api, api.rstrip("/") + "/health", "the Prefect server", timeout)
        )
    remote = settings.dvc.remote_url
    if remote.startswith("s3://"):
        found.append(_bucket("dvc.remote_url", remote, settings.dvc.endpoint_url, timeout))
    elif "://" in remote and not remote.startswith("file://"):
        pass  # other DVC remotes (gs, azure, ssh...): DVC reports them itself
    return [p for p in found if p is not None]


def check(settings: Settings, timeout: float = 5.0) -> None:
    """Raise BackendError listing every backend that is missing or does not answer."""
    found = problems(settings, timeout)
    if found:
        raise BackendError("backend check failed before any work started:\n  - " + "\n  - ".join(found))
