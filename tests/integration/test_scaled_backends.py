"""The pipeline on the scaled backends, switched by settings (environment) only: MLflow
server on PostgreSQL with S3 artifacts, Prefect server on PostgreSQL, DVC remote on S3.
A platform test: it runs the small synthetic workload, not the demo's."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.scaled]

AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
SYNTHETIC = '[workload]\nname = "synthetic"\n'


def _keel(ws, env, *args, timeout=900):
    base = {k: v for k, v in os.environ.items() if k not in AWS}
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(ws), "-p", "test", *args],
        env={**base, "PREFECT_LOGGING_LEVEL": "INFO", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_pipeline_on_postgres_and_s3_and_the_model_loads_from_s3(scaled, tmp_path):
    from keel.config.settings import load_settings
    from keel.data.workspace import read_data_version
    from keel.workloads import init_workspace

    ws = init_workspace(tmp_path / "ws", SYNTHETIC)
    env = scaled.keel_env()
    t0 = time.monotonic()
    ingest = _keel(ws, env, "ingest", "--batch", "b01")
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    train = _keel(ws, env, "train")
    assert train.returncode == 0, train.stderr[-3000:]
    print(
        f"\nscaled backends: ingest + train {time.monotonic() - t0:.1f} s "
        f"(servers up in {scaled.timings['all up']:.1f} s)"
    )

    # Prefect's runs are in its PostgreSQL database
    runs = scaled.pg.sql(
        "SELECT f.name, fr.state_type FROM flow_run fr JOIN flow f ON f.id = fr.flow_id", "prefect"
    )
    assert {("keel-ingest", "COMPLETED"), ("keel-train", "COMPLETED")} <= set(runs)
    # MLflow's registry is in its PostgreSQL database, the artifacts in S3
    assert scaled.pg.sql("SELECT name, version FROM model_versions", "mlflow") == [("synthetic", 1)]
    assert scaled.pg.sql("SELECT alias, version FROM registered_model_aliases ORDER BY alias", "mlflow") == [
        ("challenger", 1),
        ("champion", 1),
    ]
    keys = [o["Key"] for o in scaled.s3.list_objects_v2(Bucket="keel-mlflow")["Contents"]]
    assert any(k.endswith("/MLmodel") for k in keys) and any(k.endswith("gate/diff_card.md") for k in keys)
    # the data version is in the DVC remote on S3 (its .dir manifest and the partition)
    md5 = read_data_version(ws / "data.dvc").md5
    dvc_keys = [o["Key"] for o in scaled.s3.list_objects_v2(Bucket="keel-dvc")["Contents"]]
    assert f"store/files/md5/{md5[:2]}/{md5[2:]}" in dvc_keys and len(dvc_keys) == 2

    # a fresh process with only the registry's address loads the champion: the MLflow server
    # streams it from S3 (this process has no S3 credentials at all)
    rows = tmp_path / "rows.parquet"
    import pandas as pd

    pd.read_parquet(ws / "data" / "b01.parquet").head(25).to_parquet(rows)
    script = (
        "import mlflow, pandas as pd;"
        f"mlflow.set_tracking_uri({scaled.mlflow_url!r});"
        "m = mlflow.pyfunc.load_model('models:/synthetic@champion');"
        f"out = m.predict(pd.read_parquet({str(rows)!r}));"
        "print('rows', len(out), out['probability'].between(0, 1).all())"
    )
    base = {k: v for k, v in os.environ.items() if k not in AWS}
    load = subprocess.run(
        [sys.executable, "-c", script], env=base, capture_output=True, text=True, timeout=300
    )
    assert load.returncode == 0 and "rows 25 True" in load.stdout, load.stderr[-3000:]

    # credentials never logged: not in keel's output, the run's params/tags/config, Prefect's logs
    from keel.registry.tracking import client

    settings = load_settings(ws, profile="test", environ=env)
    c = client(settings.mlflow_store)
    run = c.search_runs([c.get_experiment_by_name(settings.mlflow.experiment).experiment_id])[0]
    config = c.download_artifacts(run.info.run_id, "config/resolved.json", str(tmp_path))
    logs = "\n".join(m for (m,) in scaled.pg.sql("SELECT message FROM log", "prefect"))
    seen = "\n".join(
        [
            ingest.stdout,
            ingest.stderr,
            train.stdout,
            train.stderr,
            str(run.data.params),
            str(run.data.tags),
            Path(config).read_text(),
            logs,
            (ws / ".dvc" / "config.local").read_text(),
        ]
    )
    assert logs and "s3://keel-dvc/store" in seen
    for secret in (scaled.aws_secret, scaled.pg.password):
        assert secret not in seen


def test_a_missing_or_unreachable_backend_is_named_before_any_work(scaled, tmp_path, port_factory):
    from keel.workloads import init_workspace

    ws = init_workspace(tmp_path / "ws", SYNTHETIC)
    good = scaled.keel_env()
    cases = [
        (
            {**good, "KEEL_MLFLOW__TRACKING_URI": f"http://127.0.0.1:{port_factory()}"},
            "mlflow.tracking_uri = http://127.0.0.1:",
            "cannot reach the MLflow server",
        ),
        (
            {**good, "KEEL_PREFECT__API_URL": f"http://127.0.0.1:{port_factory()}/api"},
            "prefect.api_url = http://127.0.0.1:",
            "cannot reach the Prefect server",
        ),
        (
            {**good, "KEEL_DVC__REMOTE_URL": "s3://no-such-bucket/store"},
            "dvc.remote_url = s3://no-such-bucket/store",
            "bucket 'no-such-bucket' does not exist",
        ),
        (
            {k: v for k, v in good.items() if k not in AWS},
            "dvc.remote_url = s3://keel-dvc/store",
            "no S3 credentials",
        ),
        (
            {**good, "KEEL_MLFLOW__TRACKING_URI": f"http://keel:{scaled.aws_secret}@127.0.0.1:1"},
            "mlflow.tracking_uri = http://***@127.0.0.1:1",
            "holds a password",
        ),
    ]
    before = scaled.s3.list_objects_v2(Bucket="keel-dvc").get("KeyCount")
    for env, setting, problem in cases:
        proc = _keel(ws, env, "ingest", "--batch", "b01", timeout=120)
        assert proc.returncode == 2, (setting, proc.stderr[-2000:])
        assert setting in proc.stderr and problem in proc.stderr, proc.stderr
        assert scaled.aws_secret not in proc.stderr + proc.stdout
    assert not (ws / "data").exists() and not (ws / "data.dvc").exists()  # no work was done
    assert scaled.s3.list_objects_v2(Bucket="keel-dvc").get("KeyCount") == before


def test_deployments_on_a_process_work_pool_run_through_a_prefect_worker(scaled, tmp_path):
    """What compose's worker does: keel's deployments registered to a work pool, and a
    `prefect worker` (process type) running a retraining, all on Postgres and S3."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from keel.ops.services import MONITOR_DEPLOYMENT, RETRAIN_DEPLOYMENT
    from keel.workloads import init_workspace

    ws = init_workspace(tmp_path / "ws", SYNTHETIC)
    env = {
        **{k: v for k, v in os.environ.items() if k not in AWS},
        **scaled.keel_env(),
        "PREFECT_API_URL": scaled.prefect_api,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    run = dict(env=env, capture_output=True, text=True, timeout=300)
    made = subprocess.run(
        [sys.executable, "-m", "prefect", "work-pool", "create", "keel-process", "--type", "process"], **run
    )
    assert made.returncode == 0, made.stderr[-2000:]
    reg = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.deployments",
            "--workspace",
            str(ws),
            "--profile",
            "test",
            "--work-pool",
            "keel-process",
        ],
        **run,
    )
    assert reg.returncode == 0, reg.stderr[-3000:]
    with temporary_settings({PREFECT_API_URL: scaled.prefect_api}), get_client(sync_client=True) as client:
        for name in (RETRAIN_DEPLOYMENT, MONITOR_DEPLOYMENT):
            d = client.read_deployment_by_name(name)
            assert d.work_pool_name == "keel-process" and d.schedules
        flow_run = run_deployment(
            RETRAIN_DEPLOYMENT,
            timeout=0,
            as_subflow=False,
            parameters={"workspace": str(ws), "profile": "test", "months": ["b02"]},
        )
    # The run is scheduled before the worker starts, so nothing hangs on the worker being
    # ready: `--run-once` polls the pool once, runs what is due, waits for the run's process to
    # end and exits by itself (a worker stopped by a signal instead waits for its runs'
    # processes to exit, which on a loaded 2-core machine outlasted a fixed 30 s).
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            *("-m", "prefect", "worker", "start", "--pool", "keel-process", "--type", "process"),
            "--run-once",
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        code = worker.wait(timeout=600)
    finally:
        from keel.ops.localstack import stop_process

        stop_process(worker)  # only when the wait above failed: SIGTERM, then SIGKILL after 20 s
    with temporary_settings({PREFECT_API_URL: scaled.prefect_api}), get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run.id)
    assert code == 0 and flow_run.state.is_completed(), (code, flow_run.state, log.read_text()[-3000:])
    from keel.data.workspace import read_data_version

    assert (ws / "data" / "b02.parquet").exists()
    md5 = read_data_version(ws / "data.dvc").md5  # the worker's run registered this data version
    assert (md5,) in scaled.pg.sql(
        "SELECT value FROM model_version_tags WHERE key = 'data_version'", "mlflow"
    )


def test_a_large_model_goes_to_s3_in_parts_through_the_server_and_loads_back(scaled, tmp_path, monkeypatch):
    """A ~37 MB random-init text model (keel.ops.localstack.large_text_model) logged by keel's own
    model logging to the MLflow server with proxied S3 artifacts: the server offers MLflow's
    presigned multipart upload for its S3 store, so weights.pt goes to S3 in parts straight from
    this process (which has no S3 credentials) and lands as a multipart object (its ETag counts
    the parts); a fresh process with only the server's address loads the version and answers as
    the net did. The threshold and part size are lowered here (5 MB: S3's smallest part) so a small
    model takes the path a multi-GB one does by default; the 1 GB case: bench/large_artifacts.py."""
    import math

    import pandas as pd

    from keel.config.settings import load_settings
    from keel.ops.localstack import large_text_model, register_large_model
    from keel.workloads import init_workspace

    part = 5 * 1024**2
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(2 * part))
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(part))
    for name in AWS:
        monkeypatch.delenv(name, raising=False)
    ws = init_workspace(tmp_path / "ws", SYNTHETIC)
    settings = load_settings(ws, profile="test", environ=scaled.keel_env())
    model = large_text_model(30 * 1024**2, tmp_path / "model")
    assert model["bytes"] > 30 * 1024**2
    version, _ = register_large_model(settings.mlflow_store, "transport", model)

    stored = [
        o["Key"]
        for o in scaled.s3.list_objects_v2(Bucket="keel-mlflow")["Contents"]
        if o["Key"].endswith("/artifacts/weights.pt") and o["Size"] == model["bytes"]
    ]
    assert len(stored) == 1
    etag = scaled.s3.head_object(Bucket="keel-mlflow", Key=stored[0])["ETag"].strip('"')
    assert etag.endswith(f"-{math.ceil(model['bytes'] / part)}"), etag  # a multipart object

    example = tmp_path / "example.parquet"
    model["example"].to_parquet(example)
    script = (
        "import mlflow, pandas as pd;"
        f"mlflow.set_tracking_uri({scaled.mlflow_url!r});"
        f"m = mlflow.pyfunc.load_model('models:/transport/{version}');"
        f"m.predict(pd.read_parquet({str(example)!r})).to_parquet({str(tmp_path / 'out.parquet')!r})"
    )
    base = {k: v for k, v in os.environ.items() if k not in AWS and not k.startswith("MLFLOW_MULTIPART")}
    load = subprocess.run(
        [sys.executable, "-c", script], env=base, capture_output=True, text=True, timeout=300
    )
    assert load.returncode == 0, load.stderr[-3000:]
    answered = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(answered, model["output"], check_exact=False, rtol=1e-5)
