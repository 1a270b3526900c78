"""A team's own model through keel's whole lifecycle, as README's "Your own model" says:
examples/resnet_digits (a residual CNN LightningModule with its own preprocessing and
training step, nothing of keel's) is importable by PYTHONPATH; keel init --workload digits
--model resnet_digits:ResNetFamily, ingest, train (gate) and serve as the keel command; replay,
compress, drift and the guardrail on the next batch as their flows in this process; explain's
method.json; and the registered model loads in a
fresh process where the team's package is not importable (it travels inside the model's
code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "resnet_digits"
TARGET = "resnet_digits:ResNetFamily"  # as keel.toml names it
CLASS = "resnet_digits.family:ResNetFamily"  # where the class lives: the version tags, replay


def _env() -> dict[str, str]:
    # README: export PYTHONPATH=examples/resnet_digits; the digits workload's 40 epochs shrunk
    # to 10 through keel's own env layer (its early stop ran 27 here: 0.993 test accuracy)
    return {**os.environ, "PYTHONPATH": str(EXAMPLE), "KEEL_TRAIN__MAX_EPOCHS": "10"}


def _keel(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    return proc


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """README's commands, in order; the workspace and the seconds each took."""
    root = tmp_path_factory.mktemp("team")
    seconds = {}
    for name, args in [
        ("init", ("init", "ws", "--workload", "digits", "--model", TARGET)),
        ("ingest", ("-w", "ws", "ingest", "--demo")),
        ("train", ("-w", "ws", "train", "--json")),
    ]:
        start = time.monotonic()
        proc = _keel(*args, cwd=root)
        seconds[name] = time.monotonic() - start
        _ok(proc)
        if name == "train":
            trained = json.loads(proc.stdout.splitlines()[-1])
    from keel.config.settings import load_settings

    sys.path.insert(0, str(EXAMPLE))  # this process is the team's too: keel.toml's target imports
    try:
        yield load_settings(root / "ws", environ={}), trained, seconds
    finally:
        sys.path.remove(str(EXAMPLE))
        for name in [m for m in sys.modules if m.split(".")[0] == "resnet_digits"]:
            del sys.modules[name]


def _registered(settings, version: str):
    from keel.registry.tracking import client

    return client(settings.mlflow_store).get_model_version(settings.mlflow.model_name, version)


def _pyfunc(settings, version: str):
    import mlflow

    from keel.registry.tracking import use_tracking

    use_tracking(settings.mlflow_store)
    return mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}/{version}")


def _rows(settings, n: int = 50) -> pd.DataFrame:
    parts = sorted(settings.data.dir.glob("*.parquet"))
    frame = pd.read_parquet(parts[-1]).head(n)
    return frame[[*settings.features.categorical, *settings.features.numeric]]


def test_init_writes_the_targets_and_no_other_workloads_suite(team):
    settings, _, _ = team
    toml = (settings.workspace / "keel.toml").read_text()
    assert f'target = "{TARGET}"' in toml and "[model]" in toml
    assert "dep_delay" not in toml and "flights" not in toml  # no flights suite written
    assert settings.model.target == TARGET


def test_the_weights_are_the_teams_network_trained_through_the_gate(team):
    settings, trained, _ = team
    assert trained["ok"] and trained["version"] == "1", trained
    gate = trained["gate"]
    assert gate["passed"] and gate["rules_from"], gate
    model = _pyfunc(settings, "1")
    net = model.unwrap_python_model().net
    assert type(net).__module__ == "resnet_digits.family" and type(net).__name__ == "ResNet"
    keys = list(net.state_dict())
    assert keys == list(type(net)(10, type(net.params)()).state_dict())  # the team's class's own
    assert {"stem.0.weight", "blocks.1.conv2.weight", "head.weight"} <= set(keys), keys
    version = _registered(settings, "1")
    assert version.tags["model.family"] == "resnet" and version.tags["model.target"] == CLASS
    assert len(version.tags["model.code_sha256"]) == 64
    metrics = _registered_metrics(settings, version.run_id)
    assert metrics["test/accuracy"] >= 0.9, metrics  # the team's net learnt the digits


def _registered_metrics(settings, run_id: str) -> dict:
    from keel.registry.tracking import client

    return client(settings.mlflow_store).get_run(run_id).data.metrics


def test_explain_names_the_model_agnostic_method_it_used(team):
    import mlflow

    settings, _, _ = team
    run_id = _registered(settings, "1").run_id
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="explain/method.json")
    method = json.loads(Path(local).read_text())
    assert method["method"] == "permutation", method
    assert "token" not in json.dumps(method)  # no reason borrowed from another family


def test_served_predictions_equal_the_pyfunc_on_50_raw_rows(team, port_factory):
    settings, _, _ = team
    rows = _rows(settings)
    expected = _pyfunc(settings, "1").predict(rows)
    port = port_factory()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "-w", str(settings.workspace), "serve", "--port", str(port)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=5).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.3)
        body = json.dumps({"records": json.loads(rows.to_json(orient="records"))}).encode()
        req = urllib.request.Request(
            url + "/predict", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            served = pd.DataFrame(json.loads(r.read())["predictions"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert list(served.columns) == list(expected.columns) and len(served) == 50
    for column in expected.columns:
        a, b = served[column].to_numpy(), expected[column].to_numpy()
        if b.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        else:
            assert a.tolist() == b.tolist()


FRESH = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]  # no installed keel
try:
    import resnet_digits
    sys.exit("the team's package is importable here: the test proves nothing")
except ImportError:
    pass
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.read_json(sys.argv[2], orient="split"))
where = sys.modules["resnet_digits"].__file__
print(json.dumps({"out": json.loads(out.to_json(orient="split", double_precision=15)), "where": where}))
"""


def test_the_model_loads_in_a_fresh_process_where_the_teams_package_is_not_importable(team, tmp_path):
    import mlflow

    settings, _, _ = team
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    local = mlflow.artifacts.download_artifacts(
        f"models:/{settings.mlflow.model_name}/1", dst_path=str(tmp_path)
    )
    rows = _rows(settings, 20)
    frame = tmp_path / "rows.json"
    frame.write_text(rows.to_json(orient="split"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, local, str(frame)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["where"].startswith(local) and "/code/" in got["where"]  # the copy inside the model
    out = pd.DataFrame(got["out"]["data"], columns=got["out"]["columns"])
    expected = _pyfunc(settings, "1").predict(rows)
    np.testing.assert_allclose(
        out.filter(like="p_").to_numpy(), expected.filter(like="p_").to_numpy(), rtol=1e-6
    )


# Below, the lifecycle's flows run in this process (the team's package importable here too,
# as PYTHONPATH makes it for the keel command): what they do around the team's model is the
# subject, not the command's process boundary, which the fixture's commands cross; the
# payloads are the ones the commands print under --json (their builders are the CLI's).


def test_replay_is_identical_and_says_the_code_is_as_when_built(team):
    from flows.replay import replay_flow
    from keel.cli import summary

    settings, _, _ = team
    report = summary.replay(settings, replay_flow(settings, "1"))
    assert report["identical"] and report["weights_equal"], report
    code = report["model_code"]
    assert code["target"] == CLASS and not code["changed"], code
    assert code["recorded_sha256"] == _registered(settings, "1").tags["model.code_sha256"]


def test_compress_to_onnx_passes_its_parity_gate(team, monkeypatch):
    from flows.compress import compress_flow

    settings, _, _ = team
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLE))  # README's export: the latency processes import it
    registered = compress_flow(settings, "1", "onnx")
    variant = _registered(settings, registered.version)
    assert variant.tags["gate.status"] == "blessed", variant.tags
    assert variant.tags["derived_from"] == "1" and variant.tags["model.target"] == CLASS
    rows = _rows(settings)
    a = _pyfunc(settings, registered.version).predict(rows)
    b = _pyfunc(settings, "1").predict(rows)
    assert (a["digit"] == b["digit"]).mean() >= 0.98
    np.testing.assert_allclose(a.filter(like="p_").to_numpy(), b.filter(like="p_").to_numpy(), atol=1e-4)


def test_drift_and_the_guardrail_work_around_the_teams_model(team):
    """The next batch (chunk-5, never ingested): drift compares it with the champion's training
    data, the guardrail scores the team's champion on its labelled rows."""
    from flows.drift import drift_flow
    from flows.guard import guard_flow
    from keel.cli.data import _drift_json

    settings, _, _ = team
    drift = _drift_json(drift_flow(settings, ["chunk-5"], {}))
    assert drift["compared"] and drift["reference_rows"] > 0 and drift["current_rows"] > 0, drift
    assert {f["feature"] for f in drift["features"]} == set(settings.features.numeric)
    guard = guard_flow(settings, ["chunk-5"], {}).to_json()
    champion = guard["champion"]
    assert guard["champion_after"] == champion and guard["scores"][0]["version"] == champion, guard
    assert guard["scores"][0]["metrics"]["test/accuracy"] >= 0.9, guard  # the team's net on unseen digits
