"""train.strategy = "ddp": two CPU processes (gloo) train, the flow registers the same
model format, and the metrics stay within a stated tolerance of single-process training."""

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TOLERANCE = 0.02   # |ROC-AUC / F1 difference| on the test rows, DDP vs one process


def test_ddp_on_two_cpu_processes_registers_the_same_model_format(ingested):
    import mlflow

    from flows.train import train_flow
    from keel.tracking import client, use_tracking

    s = ingested.with_overrides({"train.max_epochs": 2, "train.limit_train_batches": 1.0})
    single = train_flow(s)
    ddp = train_flow(s.with_overrides({"train.strategy": "ddp", "train.devices": 2}))
    c = client(s)
    m1, m2 = (c.get_run(v.run_id).data.metrics for v in (single, ddp))
    for metric in ("test/roc_auc", "test/f1"):
        assert abs(m1[metric] - m2[metric]) <= TOLERANCE, (metric, m1[metric], m2[metric])
    assert m2["train/epochs_run"] == 2 and c.get_run(ddp.run_id).data.params["train.strategy"] == "ddp"

    use_tracking(s)
    a, b = (mlflow.pyfunc.load_model(f"models:/{s.mlflow.model_name}/{v.version}") for v in (single, ddp))
    assert a.metadata.flavors.keys() == b.metadata.flavors.keys()
    assert a.metadata.get_input_schema() == b.metadata.get_input_schema()
    assert a.metadata.get_output_schema() == b.metadata.get_output_schema()
    import pandas as pd

    rows = pd.read_parquet(s.data.dir / "2013-02.parquet").head(50)
    out = b.predict(rows[b.metadata.get_input_schema().input_names()])
    assert len(out) == 50 and out["probability"].between(0, 1).all()
