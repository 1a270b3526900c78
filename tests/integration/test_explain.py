"""Explanations on the synthetic workload with a column the target ignores (``noise``):
every training logs explain/ (table, plot, method), the noise column ranks last, the diff
card puts the challenger's reliance beside the champion's, and POST /explain answers per
record, validated as /predict is."""

import json
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NOISY = '[workload]\nname = "synthetic"\nparams = { noise = true }\n'


@pytest.fixture
def noisy(tmp_path):
    from keel.config.settings import load_settings
    from keel.workloads import init_workspace

    s = load_settings(init_workspace(tmp_path / "ws", NOISY), profile="test", environ={})
    # trained enough to learn the signal (the test profile's one short epoch would not)
    return s.with_overrides(
        {
            "train.max_epochs": 12,
            "train.limit_train_batches": 1.0,
            "train.hidden": [32],
            "explain.enabled": True,  # the test profile leaves it off for the other tests' speed
            "explain.repeats": 5,
        }
    )


def test_every_training_logs_what_the_model_relies_on_and_noise_ranks_last(noisy):
    from fastapi.testclient import TestClient

    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.registry.tracking import client
    from keel.serving.server import ModelHolder, create_app, load_version

    s = noisy
    ingest_flow(s, ["b01", "b02"])
    v1 = train_flow(s)
    c = client(s.mlflow_store)
    names = {f.path for f in c.list_artifacts(v1.run_id, "explain")}
    assert names == {"explain/importance.csv", "explain/importance.png", "explain/method.json"}
    meta = json.loads(Path(c.download_artifacts(v1.run_id, "explain/method.json")).read_text())
    assert meta["method"] == "ablation" and meta["rows"] > 100
    table = pd.read_csv(c.download_artifacts(v1.run_id, "explain/importance.csv"))
    assert set(table["feature"]) == {"segment", "channel", "x1", "x2", "x3", "visits", "noise"}
    assert table["feature"].tolist()[-1] == "noise", table  # the column the target ignores
    assert table["feature"].tolist()[0] == "x1"  # the largest coefficient (1.5)
    assert abs(table.set_index("feature").loc["noise", "importance"]) < 0.01
    assert "test/slice_gap/segment" in c.get_run(v1.run_id).data.metrics

    # the second training's card: its reliance beside the champion's (v1)
    v2 = train_flow(s.with_overrides({"train.lr": 0.02}))
    card = Path(c.download_artifacts(v2.run_id, "gate/diff_card.md")).read_text()
    assert "## What the model relies on (ablation, explain/importance.csv)" in card
    x1_row = next(line for line in card.splitlines() if line.startswith("| 1 | x1 |"))
    assert x1_row.endswith("| 1 |")  # v1 ranked x1 first too

    # POST /explain: per record, beside the predictions; validated like /predict
    app = create_app(s, ModelHolder(load_version(s.mlflow_store, v1.version)))
    rows = pd.read_parquet(s.data.dir / "b02.parquet").drop(columns=["target", "id"]).head(3)
    with TestClient(app) as http:
        ok = http.post("/explain", json={"records": json.loads(rows.to_json(orient="records"))})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["method"] == "ablation" and body["model_version"] == v1.version
        assert len(body["explanations"]) == 3 == len(body["predictions"])
        first = body["explanations"][0]
        assert first["explains"] == "logit of target"
        assert set(first["attributions"]) == set(table["feature"])
        bad = http.post(
            "/explain",
            json={"records": [{**json.loads(rows.head(1).to_json(orient="records"))[0], "x1": "high"}]},
        )
        assert bad.status_code == 422 and "x1" in bad.json()["error"]
        missing = http.post("/explain", json={"records": [{"segment": "a"}]})
        assert missing.status_code == 422
        too_many = http.post("/explain", json={"records": [{"segment": "a"}] * (s.explain.max_records + 1)})
        assert too_many.status_code == 413
