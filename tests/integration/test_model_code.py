"""The code a registered model carries: keel's model runtime and what it imports, no more,
enough to load and predict where no keel is installed; and models registered by an earlier
keel (with that keel's code inside) keep loading, serving and replaying with this one.

tests/fixtures/registered-aaec47d.tar.xz is a workspace that keel at aaec47d (the last
commit before keel/ was laid out by concern) made: the synthetic workload, v1 trained and
v2 its ONNX variant (keel compress 1 --method onnx), both registered with that keel's code
inside them (their MLmodel names ``keel.pyfunc``). Nothing here rebuilds them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

COMMIT = "aaec47d"


@pytest.fixture(scope="module")
def before(tmp_path_factory, registered_before):
    return registered_before(COMMIT, tmp_path_factory.mktemp("registered-before"))


def _frame(split: dict) -> pd.DataFrame:
    return pd.DataFrame(split["data"], columns=split["columns"])


def _same(out: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(out.columns) == list(expected.columns)
    for column in out.columns:
        a, b = out[column].to_numpy(), expected[column].to_numpy()
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)  # the manifest keeps 15 digits
        else:
            assert a.tolist() == b.tolist()


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_version_registered_before_predicts_as_it_did_with_this_keel(before, version):
    """Loaded in this process (this keel imported), its entry file's ``keel.pyfunc`` resolves to
    the alias of the new runtime, which reads the old artifacts and answers as the old code did."""
    import mlflow

    from keel.registry import tracking

    settings, manifest = before
    tracking.use_tracking(settings.mlflow_store)
    model = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}/{version}")
    recorded = manifest["predictions"][version]
    out = model.predict(_frame(recorded["input"]))
    _same(out, _frame(recorded["output"]))
    runtime = type(model.unwrap_python_model())
    assert runtime.__module__ == "keel.model.runtime.pyfunc"
    assert sys.modules["keel.pyfunc"].__file__.endswith("keel/pyfunc.py")


FRESH = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]  # no installed keel
import mlflow
from mlflow.models import Model
local = mlflow.artifacts.download_artifacts(sys.argv[1])
model = mlflow.pyfunc.load_model(local)
out = model.predict(Model.load(local).load_input_example(local))
files = sorted({m.__file__ for n, m in sys.modules.items() if n.split(".")[0] == "keel"})
print(json.dumps({"out": json.loads(out.to_json(orient="split", double_precision=15)), "files": files}))
"""


def test_versions_registered_before_load_in_a_fresh_process_on_their_own_code(before, tmp_path):
    """``mlflow.pyfunc.load_model`` where no keel is installed (MLflow models serve, a
    serving image): the model runs on the keel code it carries, and answers as recorded."""
    settings, manifest = before
    for version in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-c", FRESH, f"models:/{settings.mlflow.model_name}/{version}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**_env(), "MLFLOW_TRACKING_URI": settings.mlflow.tracking_uri},
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        _same(_frame(result["out"]), _frame(manifest["predictions"][version]["output"]))
        assert result["files"] and all("/artifacts/code/keel/" in f for f in result["files"]), result["files"]


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}


def test_versions_registered_before_pass_the_servability_check_and_serve(before):
    from fastapi.testclient import TestClient

    from keel.registry.promotion import servability
    from keel.serving.server import ModelHolder, create_app, load_version

    settings, manifest = before
    for version in ("1", "2"):
        assert servability(settings.mlflow_store, settings.promotion, version)["ok"]
        app = create_app(settings, ModelHolder(load_version(settings.mlflow_store, version)))
        recorded = manifest["predictions"][version]
        records = _frame(recorded["input"]).to_dict(orient="records")
        with TestClient(app) as client:
            answer = client.post("/predict", json={"records": records})
        assert answer.status_code == 200, answer.text
        _same(pd.DataFrame(answer.json()["predictions"]), _frame(recorded["output"]))


def test_versions_registered_before_replay_identical(before):
    """Their recorded config migrates, their data comes back from the DVC remote, and this
    keel retrains v1 bit for bit and compresses it again into the same ONNX bytes (v2), on
    the kind of CPU that made them. Which kind that was, the fixture does not say (it predates
    the ``numerics`` tag): on another kind (CI's machines differ: AVX2 or AVX-512, MKL's
    kernels per vendor) the float sums run in another order, so the weights differ in their
    last bits; then every metric stays within 1e-7 and the report says why."""
    from flows.replay import replay_flow
    from keel.registry.lineage import numerics

    settings, _ = before
    for version in ("1", "2"):
        report = replay_flow(settings, version)
        assert report.lineage.numerics == "" and report.numerics == numerics()
        assert not report.same_numerics  # unrecorded: never taken for the same kind
        if report.identical:
            continue
        assert report.deltas and max(map(abs, report.deltas.values())) <= 1e-7, report.deltas
        assert report.environment["removed"] == [], report.environment
        assert "bit-identity is kept on the kind of CPU a version was trained on" in report.markdown()


def test_a_model_carries_the_runtime_and_what_it_imports_and_loads_without_keel(trained_registry, tmp_path):
    import mlflow

    from keel.registry import tracking
    from keel.registry.packaging import runtime_modules

    tracking.use_tracking(trained_registry.mlflow_store)
    uri = f"models:/{trained_registry.mlflow.model_name}/1"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    code = local / "code" / "keel"
    files = sorted(str(p.relative_to(code)) for p in code.rglob("*.py"))
    assert len(files) == len(runtime_modules())
    assert {"model/runtime/pyfunc.py", "model/families/mlp.py", "model/objectives.py", "errors.py"} <= set(
        files
    )
    platform = ("cli/", "ops/", "serving/", "registry/", "data/", "workloads/", "config/")
    assert not [f for f in files if f.startswith(platform)], files
    assert not {"model/training.py", "model/evaluation.py", "model/explain.py", "model/compress.py"} & set(
        files
    )
    size = sum(p.stat().st_size for p in code.rglob("*") if p.is_file())
    assert size < 100_000, size  # the whole package was ~540 kB

    proc = subprocess.run(
        [sys.executable, "-c", FRESH, str(local)], cwd=tmp_path, capture_output=True, text=True, env=_env()
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(f.startswith(str(code)) for f in result["files"]), result["files"]
    assert len(_frame(result["out"])) == 5
