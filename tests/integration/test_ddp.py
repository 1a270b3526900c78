"""train.strategy = "ddp": two CPU processes (gloo) train, the flow registers the same
model format, and the metrics stay within a stated tolerance of single-process training."""

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TOLERANCE = 0.02  # |ROC-AUC / F1 difference| on the test rows, DDP vs one process


def test_ddp_on_two_cpu_processes_registers_the_same_model_format(ingested):
    import mlflow

    from flows.train import train_flow
    from keel.registry.tracking import client, use_tracking

    s = ingested.with_overrides({"train.max_epochs": 2, "train.limit_train_batches": 1.0})
    single = train_flow(s)
    ddp = train_flow(s.with_overrides({"train.strategy": "ddp", "train.devices": 2}))
    c = client(s.mlflow_store)
    m1, m2 = (c.get_run(v.run_id).data.metrics for v in (single, ddp))
    for metric in ("test/roc_auc", "test/f1"):
        assert abs(m1[metric] - m2[metric]) <= TOLERANCE, (metric, m1[metric], m2[metric])
    assert m2["train/epochs_run"] == 2 and c.get_run(ddp.run_id).data.params["train.strategy"] == "ddp"

    use_tracking(s.mlflow_store)
    a, b = (mlflow.pyfunc.load_model(f"models:/{s.mlflow.model_name}/{v.version}") for v in (single, ddp))
    assert a.metadata.flavors.keys() == b.metadata.flavors.keys()
    assert a.metadata.get_input_schema() == b.metadata.get_input_schema()
    assert a.metadata.get_output_schema() == b.metadata.get_output_schema()
    import pandas as pd

    rows = pd.read_parquet(s.data.dir / "2013-02.parquet").head(50)
    out = b.predict(rows[b.metadata.get_input_schema().input_names()])
    assert len(out) == 50 and out["probability"].between(0, 1).all()


def test_torchrun_starts_two_ranks_and_only_rank_0_logs_and_registers(ingested):
    """ddp_start_method = "popen": an outside launcher (torchrun here, one job per node on
    Kubernetes) starts every rank with `keel train`; rank 0 runs the flow."""
    import os
    import subprocess
    import sys

    from keel.registry.tracking import client

    s = ingested
    env = {
        **os.environ,
        "KEEL_TRAIN__STRATEGY": "ddp",
        "KEEL_TRAIN__DEVICES": "2",
        "KEEL_TRAIN__DDP_START_METHOD": "popen",
        "KEEL_SPLIT__REFIT": "false",  # ranks an outside launcher starts fit once
        "KEEL_TRAIN__MAX_EPOCHS": "2",
        "KEEL_TRAIN__LIMIT_TRAIN_BATCHES": "1.0",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "keel.cli",
            "-w",
            str(s.workspace),
            "-p",
            "test",
            "train",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (
        "rank 1: trained as a DDP worker" in proc.stdout
        and "registered models:/flight-delay/1" in proc.stdout
    )
    c = client(s.mlflow_store)
    runs = c.search_runs([c.get_experiment_by_name(s.mlflow.experiment).experiment_id])
    assert len(runs) == 1 and len(c.search_model_versions(f"name='{s.mlflow.model_name}'")) == 1
    params = runs[0].data.params
    assert (params["train.strategy"], params["train.ddp_start_method"], params["train.devices"]) == (
        "ddp",
        "popen",
        "2",
    )
    assert runs[0].data.metrics["train/epochs_run"] == 2
