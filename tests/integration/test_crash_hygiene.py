"""A keel command killed with SIGKILL leaves no Prefect server behind, and the next
command marks its MLflow run KILLED; a store that does not answer is never "not found".
Real processes, a real SIGKILL, a real MLflow sqlite store."""

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from keel.registry import tracking


def _cli(settings, *args, env=None, **kw):
    """keel as a user runs it with no Prefect server configured: it starts its own (the
    session's shared server, conftest, is taken out)."""
    cmd = [sys.executable, "-m", "keel.cli", "-w", str(settings.workspace), "-p", "test", *args]
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.Popen(cmd, env={**base, **(env or {})}, **kw)


def _running_runs(settings):
    c = tracking.client(
        settings.mlflow_store
    )  # no reaping from the test's side; the store opens under its lock
    exp = c.get_experiment_by_name(settings.mlflow.experiment)
    if exp is None:
        return []
    return c.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")


def _servers_of(pid):
    procs = psutil.Process(pid).children(recursive=True)
    return [p for p in procs if "keel.ops.prefect_server" in " ".join(p.cmdline())]


@pytest.mark.slow
@pytest.mark.integration
def test_sigkill_mid_training_leaves_no_prefect_server_and_the_run_is_marked_killed(ingested, tmp_path):
    # a training that would run for a long time: the kill lands while it trains
    endless = {"KEEL_TRAIN__MAX_EPOCHS": "100000", "KEEL_TRAIN__PATIENCE": "100000"}
    log = (tmp_path / "train.log").open("wb")
    proc = _cli(ingested, "train", env=endless, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not _running_runs(ingested):
            assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the training never opened its MLflow run"
            time.sleep(0.3)
        servers = _servers_of(proc.pid)
        assert len(servers) == 1, [p.cmdline() for p in servers]  # the command's own Prefect server
        (run,) = _running_runs(ingested)
        assert run.data.tags["keel.pid"] == str(proc.pid)
        time.sleep(2)  # well inside the fit
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    _, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive, f"Prefect server(s) outlived the killed command: {[p.pid for p in alive]}"
    assert (run.info.run_id,) == tuple(r.info.run_id for r in _running_runs(ingested))  # nobody marked it yet

    status = _cli(ingested, "status", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = status.communicate(timeout=300)
    # no model was ever registered: status says so (exit 1), after the killed run
    assert status.returncode == 1 and "registered model 'flight-delay' does not exist" in err, err
    c = tracking.client(ingested.mlflow_store)
    marked = c.get_run(run.info.run_id)
    assert marked.info.status == "KILLED"
    reason = marked.data.tags[tracking.KILLED_TAG]
    assert f"process {proc.pid} on {socket.gethostname()}" in reason
    assert f"KILLED run {run.info.run_name} ({run.info.run_id})" in out and reason in out
    assert not c.search_model_versions(f"name='{ingested.mlflow.model_name}'")  # nothing registered


def test_a_run_is_marked_killed_only_when_its_process_on_this_host_is_gone(synthetic):
    from mlflow import MlflowClient

    exp_id = tracking.ensure_experiment(synthetic.mlflow_store)
    raw = MlflowClient(tracking_uri=synthetic.mlflow.tracking_uri)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mine = tracking.process_tags(synthetic.mlflow_store)
    dead = {**mine, tracking.PID_TAG: str(gone.pid)}
    reused = {**mine, tracking.PID_STARTED_TAG: "1.0"}  # this PID, but not the process that opened it
    other_host = {**dead, tracking.HOST_TAG: "another-machine"}
    other_ws = {**dead, tracking.WORKSPACE_TAG: "/somewhere/else"}
    runs = {
        name: raw.create_run(exp_id, run_name=name, tags=tags).info.run_id
        for name, tags in {
            "dead": dead,
            "reused": reused,
            "alive": mine,
            "other-host": other_host,
            "other-ws": other_ws,
            "untagged": {},
        }.items()
    }

    killed = tracking.reap_orphaned_runs(synthetic.mlflow_store, raw)
    assert sorted(killed) == sorted([runs["dead"], runs["reused"]])
    status = {name: raw.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {
        "dead": "KILLED",
        "reused": "KILLED",
        "alive": "RUNNING",
        "other-host": "RUNNING",
        "other-ws": "RUNNING",
        "untagged": "RUNNING",
    }
    assert [r["run_name"] for r in tracking.killed_runs(synthetic.mlflow_store)] == ["reused", "dead"]


def test_lineage_reports_a_missing_version_as_not_found_and_a_dead_server_as_an_error(synthetic, monkeypatch):
    from mlflow.exceptions import MlflowException

    from keel.errors import NotFoundError, is_transient
    from tasks.lineage import load_lineage

    tracking.ensure_experiment(synthetic.mlflow_store)
    with pytest.raises(NotFoundError, match="has no version '9'"):
        load_lineage.fn(synthetic.mlflow_store, synthetic.data_store, "9")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries, not keel's
    url = f"http://127.0.0.1:{port}"
    down = synthetic.with_overrides({"mlflow.tracking_uri": url, "mlflow.registry_uri": url})
    with pytest.raises(MlflowException) as err:
        load_lineage.fn(down.mlflow_store, down.data_store, "1")
    assert not isinstance(err.value, NotFoundError) and "no version" not in str(err.value)
    assert is_transient(err.value)
