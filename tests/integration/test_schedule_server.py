"""Scheduling on a real `prefect server start` on a free loopback port, through `keel up`
(one for the module): the deployments and their schedules, a retraining run executed by
the runner, drift -> exactly one retraining, and `keel down` leaving no process behind."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _cli(ws, *args, timeout=120):
    env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    cmd = [sys.executable, "-m", "keel.cli", "-w", str(ws), "-p", "test", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory, port_factory):
    """A workspace on the synthetic workload with a champion (v1 on b01), and `keel up`
    running for it (one server set for the module; the last test takes it down)."""
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.ops import services
    from keel.workloads import init_workspace

    ws = init_workspace(tmp_path_factory.mktemp("served") / "ws", '[workload]\nname = "synthetic"\n')
    s = load_settings(ws, profile="test", environ={})
    ingest_flow(s, ["b01"])
    assert train_flow(s).version == "1"
    with socket.socket() as busy:  # a taken port: refused before anything starts
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        refused = _cli(ws, "up", "--prefect-port", str(busy.getsockname()[1]))
    assert refused.returncode == 1 and "up.prefect_port: 127.0.0.1:" in refused.stderr
    assert not (ws / ".keel" / "up.json").exists()

    ports = port_factory(), port_factory()
    proc = _cli(ws, "up", "--prefect-port", str(ports[0]), "--mlflow-port", str(ports[1]), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = s.with_overrides({"up.prefect_port": ports[0], "up.mlflow_port": ports[1]})
    state = services.read_state(s)
    assert state is not None
    yield s, state, ports, proc.stdout
    services.down(s)  # a no-op when the last test's `keel down` ran


def test_keel_up_serves_both_uis_and_records_its_processes(served):
    s, state, ports, stdout = served
    assert f"Prefect UI:  http://127.0.0.1:{ports[0]}" in stdout
    assert f"MLflow UI:   http://127.0.0.1:{ports[1]}" in stdout
    assert [x.name for x in state.services] == ["prefect-server", "mlflow-server", "runner"]
    for url in (f"http://127.0.0.1:{ports[0]}/api/health", f"http://127.0.0.1:{ports[1]}/health"):
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200
    again = _cli(s.workspace, "up")
    assert again.returncode == 1 and "already up" in again.stderr


@pytest.fixture
def api(served):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: served[1].prefect_api}), get_client(sync_client=True) as client:
        yield client


def _wait_final(client, run_id, timeout=420):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state.type.value in FINAL:
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} not finished in {timeout}s: {run.state}")


def _versions(ws) -> list[str]:
    from keel.registry.tracking import client

    return sorted(
        str(v.version)
        for v in client(ws.mlflow_store).search_model_versions(f"name='{ws.mlflow.model_name}'")
    )


def test_the_deployments_exist_with_their_schedules(served, api):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from keel.ops.services import MONITOR_DEPLOYMENT, RETRAIN_DEPLOYMENT

    s = served[0]
    for name, cron in (
        (RETRAIN_DEPLOYMENT, s.prefect.retrain_cron),
        (MONITOR_DEPLOYMENT, s.prefect.monitor_cron),
    ):
        d = api.read_deployment_by_name(name)
        assert [(x.schedule.cron, x.schedule.timezone, x.active) for x in d.schedules] == [
            (cron, "UTC", True)
        ]
        assert d.parameters == {"workspace": str(s.workspace), "profile": "test"}
    # the server's scheduler has put the next monthly retrainings on the calendar: 06:00 on the 1st
    retrain = api.read_deployment_by_name(RETRAIN_DEPLOYMENT)
    deadline = time.monotonic() + 90
    while (
        not (
            upcoming := api.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[retrain.id]))
            )
        )
        and time.monotonic() < deadline
    ):
        time.sleep(2)
    scheduled = [r for r in upcoming if r.state.type.value == "SCHEDULED"]
    assert scheduled and all(
        (r.expected_start_time.day, r.expected_start_time.hour) == (1, 6) for r in scheduled
    )


def test_a_triggered_retraining_runs_to_completion_through_the_runner(served, api, tmp_path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from keel.ops.services import RETRAIN_DEPLOYMENT

    s, state = served[0], served[1]
    with temporary_settings({PREFECT_API_URL: state.prefect_api}):
        run = run_deployment(
            RETRAIN_DEPLOYMENT,
            timeout=0,
            as_subflow=False,
            parameters={"workspace": str(s.workspace), "profile": "test", "months": ["b02"]},
        )
    run = _wait_final(api, run.id)
    assert run.state.type.value == "COMPLETED", run.state.message
    assert (s.data.dir / "b02.parquet").exists() and _versions(s) == ["1", "2"]

    # a batch that breaks the suite: the run completes (the schedule goes on), on record, no model
    bad = pd.read_parquet(s.data.dir / "b01.parquet").assign(target=float("nan"))  # no labels
    bad.to_parquet(tmp_path / "bad.parquet")
    with temporary_settings({PREFECT_API_URL: state.prefect_api}):
        run = run_deployment(
            RETRAIN_DEPLOYMENT,
            timeout=0,
            as_subflow=False,
            parameters={
                "workspace": str(s.workspace),
                "profile": "test",
                "files": {"bad": str(tmp_path / "bad.parquet")},
            },
        )
    run = _wait_final(api, run.id)
    assert run.state.type.value == "COMPLETED" and _versions(s) == ["1", "2"]
    record = json.loads((s.reports.dir / "ingest" / "rejections.jsonl").read_text().splitlines()[-1])
    assert record["batches"] == ["bad"] and {f["column"] for f in record["failures"]} == {"target"}
    assert not (s.data.dir / "bad.parquet").exists()


def test_a_shifted_batch_triggers_exactly_one_retraining_an_unshifted_one_none(served, api, tmp_path):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.monitor import monitor_flow
    from tasks.trigger import TRIGGER_TAG, model_tag

    s, state = served[0], served[1]
    s = s.with_overrides({"drift.share_threshold": 0.3})  # 2 of 6 features shifted below
    before = _versions(s)
    frame = pd.read_parquet(s.data.dir / "b01.parquet")
    path = tmp_path / "heatwave.parquet"
    frame.assign(x1=frame["x1"] + 3.0, x3=frame["x3"] / 3).to_parquet(path)
    with temporary_settings({PREFECT_API_URL: state.prefect_api}):
        calm = monitor_flow(s, ["b01"])
        hot = monitor_flow(s, files={"heatwave": path})
        again = monitor_flow(s.with_overrides({"drift.cooldown_s": 0}), files={"heatwave-2": path})
    assert calm.status == "no-drift" and calm.trigger.action == "none"
    assert hot.status == "drift" and hot.trigger.action == "deployment" and hot.retrained is None
    assert again.status == "drift" and again.trigger.action == "deduped"
    assert again.trigger.flow_run_id == hot.trigger.flow_run_id
    run = _wait_final(api, hot.trigger.flow_run_id)
    assert run.state.type.value == "COMPLETED", run.state.message
    triggered = api.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[TRIGGER_TAG, model_tag(s)]))
    )
    assert [r.id for r in triggered] == [run.id]
    assert len(_versions(s)) == len(before) + 1 and (s.data.dir / "heatwave.parquet").exists()

    # keel status: the servers up, the next scheduled runs, the newest drift check
    status = _cli(s.workspace, "status", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    more = json.loads(status.stdout)
    assert [(x["name"], x["up"]) for x in more["servers"]] == [
        ("prefect-server", True),
        ("mlflow-server", True),
        ("runner", True),
    ]
    retrain_next = more["schedules"][0]["next_run"]
    assert retrain_next is not None and retrain_next[8:16] == "01T06:00"  # 06:00 on the 1st
    assert more["drift"]["drifted"] and more["drift"]["batch"].startswith("heatwave")


def _tree(pids):
    import psutil

    procs = []
    for pid in pids:
        p = psutil.Process(pid)
        procs += [p, *p.children(recursive=True)]
    return procs


def test_keel_down_leaves_no_process_behind(served):
    """Runs last in this module: it stops what the fixture's `keel up` started."""
    import psutil

    s, state, ports, _ = served
    tree = _tree([x.pid for x in state.services])
    proc = _cli(s.workspace, "down")
    assert proc.returncode == 0 and proc.stdout.count("stopped ") == 3
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert not (s.workspace / ".keel" / "up.json").exists()
    proc = _cli(s.workspace, "down")
    assert proc.returncode == 0 and "nothing to stop" in proc.stdout
