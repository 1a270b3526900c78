"""keel serve on a loopback port: hot swap on promote and rollback, zero failed requests
through a swap, 4xx for malformed payloads; keel predict in chunks."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from importlib import resources

import jsonschema
import pandas as pd
import pytest

from keel.registry.promotion import Registry, promote, rollback

pytestmark = [pytest.mark.slow, pytest.mark.integration]

POLL_S = 1.0


@pytest.fixture
def server(ws, free_tcp_port):
    port = free_tcp_port
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keel.cli",
            "-w",
            str(ws.workspace),
            "-p",
            "test",
            "serve",
            "--port",
            str(port),
            "--poll",
            str(POLL_S),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            get(url, "/health")
            break
        except OSError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def get(url, path):
    with urllib.request.urlopen(url + path, timeout=10) as r:
        return json.loads(r.read())


def post(url, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/predict", data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def records(ws, n=3):
    frame = pd.read_parquet(ws.data.dir / "b01.parquet").head(n)
    cols = [*ws.features.categorical, *ws.features.numeric]
    return json.loads(frame[cols].to_json(orient="records"))


def wait_for_version(url, version, timeout):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if get(url, "/version")["model_version"] == version:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"/version never became {version}")


def test_promote_and_rollback_switch_the_served_version(ws, server):
    info = get(server, "/version")
    assert info["model_version"] == "1" and info["data_version"].endswith(".dir")
    status, body = post(server, {"records": records(ws)})
    assert status == 200 and body["model_version"] == "1" and len(body["predictions"]) == 3
    promote(ws.mlflow_store, ws.promotion, "3", reviewer="alice", reason="serve it")
    took = wait_for_version(server, "3", POLL_S + 30)  # one poll plus the load-and-check
    assert post(server, {"records": records(ws)})[1]["model_version"] == "3"
    rollback(ws.mlflow_store, ws.promotion, reason="back", actor="alice")
    back = wait_for_version(server, "1", POLL_S + 30)
    print(f"swap after promote: {took:.2f}s, after rollback: {back:.2f}s (poll {POLL_S}s)")


def test_requests_through_a_swap_never_fail(ws, server):
    payload = {"records": records(ws, 5)}
    results, stop = [], threading.Event()

    def client():
        for _ in range(2000):  # bounded; stops early once the swap was seen
            if stop.is_set():
                return
            results.append(post(server, payload))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    promote(ws.mlflow_store, ws.promotion, "3", reviewer="alice", reason="swap under load")
    wait_for_version(server, "3", POLL_S + 30)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    statuses = [s for s, _ in results]
    versions = {b["model_version"] for _, b in results}
    assert len(statuses) > 20 and set(statuses) == {200}, [r for r in results if r[0] != 200][:3]
    assert versions == {"1", "3"}


def test_malformed_payloads_get_4xx_and_the_server_stays_up(ws, server):
    good = records(ws, 1)[0]
    cases = [
        ({k: v for k, v in good.items() if k != "segment"}, 422, "missing field(s) ['segment']"),
        ({**good, "x1": "far"}, 422, "field 'x1' must be a number"),
        ({**good, "visits": 5.5}, 422, "field 'visits' must be an integer"),
        ({**good, "segment": "ZZ"}, 422, "field 'segment': unknown category 'ZZ'"),
        ({**good, "channel": 7}, 422, "field 'channel' must be a string"),
    ]
    for record, code, needle in cases:
        status, body = post(server, {"records": [record]})
        assert status == code and needle in body["error"], (record, body)
    assert post(server, b"") == (400, {"error": "empty body"})
    assert post(server, {"records": []})[0] == 400
    assert post(server, b"{not json")[0] == 400
    assert post(server, {"records": "nope"})[0] == 400
    assert post(server, b"[" + b"1," * 3_000_000 + b"1]")[0] == 413
    assert post(server, {"records": [good] * 10_001})[0] == 413
    assert get(server, "/health")["status"] == "ok" and post(server, {"records": [good]})[0] == 200


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(ws, server):
    import sqlite3

    reg = Registry(ws.mlflow_store, ws.promotion)
    broken = ws.workspace / "broken-model"
    broken.mkdir()
    with sqlite3.connect(ws.mlflow.tracking_uri.removeprefix("sqlite:///")) as con:
        con.execute(
            "UPDATE model_versions SET source=?, storage_location=? WHERE name=? AND version=2",
            (broken.as_uri(), broken.as_uri(), reg.name),
        )
    reg.client.set_registered_model_alias(reg.name, "champion", "2")  # straight in the registry
    deadline = time.monotonic() + POLL_S + 30
    while time.monotonic() < deadline and not get(server, "/health")["last_error"]:
        time.sleep(0.2)
    health = get(server, "/health")
    assert "v2 failed to load; still serving v1" in health["last_error"]
    assert get(server, "/version")["model_version"] == "1"
    assert post(server, {"records": records(ws)})[0] == 200


def test_batch_predict_scores_in_chunks_and_reports_bad_rows(ws, tmp_path):
    frame = pd.read_parquet(ws.data.dir / "b01.parquet").astype(object)
    frame.loc[5, "segment"] = "ZZ"
    frame.loc[250, "x1"] = "far"
    src, out = tmp_path / "rows.csv", tmp_path / "scored.parquet"
    frame.to_csv(src, index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keel.cli",
            "-w",
            str(ws.workspace),
            "-p",
            "test",
            "predict",
            "--input",
            str(src),
            "--output",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "KEEL_SERVE__CHUNK_ROWS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # besides the two corrupted rows, rows whose categories v1 never saw in training are refused too
    import mlflow

    mlflow.set_tracking_uri(ws.mlflow.tracking_uri)
    vocab = (
        mlflow.pyfunc.load_model(f"models:/{ws.mlflow.model_name}/1").unwrap_python_model().preprocessor.vocab
    )
    unseen = {i for c, known in vocab.items() for i, v in enumerate(frame[c].astype(str)) if v not in known}
    expected = sorted({5, 250} | unseen)
    summary = json.loads(proc.stdout)  # --json: one object on stdout, the row errors on stderr
    jsonschema.validate(
        summary, json.loads(resources.files("keel.cli").joinpath("schemas/predict.json").read_text())
    )
    assert (summary["rows"], summary["bad_rows"], summary["model_version"]) == (
        len(frame),
        len(expected),
        "1",
    )
    assert "row 5: field 'segment': unknown category 'ZZ'" in proc.stderr
    assert "row 250: field 'x1': not a number: 'far'" in proc.stderr
    scored = pd.read_parquet(out)
    assert len(scored) == len(frame) and list(scored["row"]) == list(range(len(frame)))
    assert set(scored["model_version"]) == {"1"}
    bad = scored[scored["error"] != ""]
    assert list(bad["row"]) == expected and bad["probability"].isna().all()
    assert scored.drop(index=expected)["probability"].between(0, 1).all()


def test_shadow_scores_the_challenger_off_the_response_path_and_logs_agreement(ws, free_tcp_port):
    from keel.registry import tracking

    challenger = Registry(ws.mlflow_store, ws.promotion).alias("challenger")
    assert challenger not in (None, "1")
    args = ["serve", "--port", str(free_tcp_port), "--poll", str(POLL_S), "--shadow"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "-w", str(ws.workspace), "-p", "test", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{free_tcp_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(url, "/shadow")["challenger"] == challenger:
                    break
            except OSError:
                assert proc.poll() is None
            assert time.monotonic() < deadline, "the shadow never loaded @challenger"
            time.sleep(0.3)
        for _ in range(25):
            status, body = post(url, {"records": records(ws, 4)})
            assert status == 200 and body["model_version"] == "1"  # the champion answers
        while (pairs := get(url, "/shadow")["pairs"]) == [] or pairs[0]["shadow/requests"] < 25:
            assert time.monotonic() < deadline, pairs
            time.sleep(0.2)
        (pair,) = pairs
        assert (pair["champion"], pair["challenger"], pair["shadow/rows"]) == ("1", challenger, 100.0)
        assert pair["shadow/errors"] == 0
        assert pair["shadow/challenger_p50_ms"] > 0 and pair["shadow/champion_p50_ms"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    c = tracking.client(ws.mlflow_store)
    exp = c.get_experiment_by_name(f"{ws.mlflow.experiment}-shadow")
    (run,) = c.search_runs([exp.experiment_id])
    assert run.data.tags["challenger"] == challenger and run.data.metrics["shadow/requests"] == 25
    assert run.data.metrics["shadow/agreement"] == pytest.approx(pair["shadow/agreement"])
    # the agreement is the share of the 4 rows (sent 25 times) on which both versions, loaded
    # here on their own, predict the same label
    import mlflow

    mlflow.set_tracking_uri(ws.mlflow.tracking_uri)
    sent = pd.DataFrame(records(ws, 4))
    champion_out, challenger_out = (
        mlflow.pyfunc.load_model(f"models:/{ws.mlflow.model_name}/{v}").predict(sent)
        for v in ("1", challenger)
    )
    label = ws.features.label
    same = (champion_out[label].astype(str) == challenger_out[label].astype(str)).mean()
    assert pair["shadow/agreement"] == pytest.approx(same)
