"""start/train/evaluate/log/register/report tasks against a real MLflow sqlite store in tmp."""

import json
import os
import subprocess

import pytest
from mlflow.exceptions import MlflowException

from tasks.data import load_splits, resolve_dataset, validate_data
from tasks.evaluate import evaluate_model, log_evaluation
from tasks.register import register_model
from tasks.report import summary_markdown
from tasks.train import end_run, run_name, start_run, train_model

pytestmark = pytest.mark.slow


@pytest.fixture
def trained(ingested):
    dataset = resolve_dataset.fn(ingested.data_store)
    validation = validate_data.fn(ingested, dataset)
    splits = load_splits.fn(ingested.workload, ingested.split, dataset)
    run_id = start_run.fn(ingested, dataset, validation, splits)
    model = train_model.fn(
        ingested.workload,
        ingested.model,
        ingested.features,
        ingested.train,
        ingested.mlflow_store,
        splits,
        run_id,
    )
    evaluation = evaluate_model.fn(ingested.features, model, splits)
    return dict(
        settings=ingested,
        dataset=dataset,
        validation=validation,
        splits=splits,
        run_id=run_id,
        model=model,
        evaluation=evaluation,
    )


def _client(settings):
    from keel.registry.tracking import client

    return client(settings.mlflow_store)


def test_start_run_records_data_version_config_and_commit(trained):
    s, run_id, dataset = trained["settings"], trained["run_id"], trained["dataset"]
    run = _client(s).get_run(run_id)
    assert run.info.run_name == run_name(dataset) and dataset.version.short in run.info.run_name
    assert run.data.tags["data_version"] == dataset.version.md5
    assert run.data.tags["config_hash"] == s.config_hash()
    assert run.data.tags["validation_status"] == "passed"
    # keel init made the first commit, and ingest left the tracked files as they were
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=s.workspace, capture_output=True, text=True)
    assert run.data.tags["git_sha"] == head.stdout.strip() == run.data.tags["mlflow.source.git.commit"]
    assert len(run.data.tags["git_sha"]) == 40
    # who holds the run open, so that a killed one can be found
    assert run.data.tags["keel.pid"] == str(os.getpid()) and run.data.tags["keel.host"]
    # the data version as an MLflow dataset input: the UI's Dataset column and lineage
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == dataset.version.md5.removesuffix(".dir")
    assert inp.dataset.source_type == "dvc"
    source = json.loads(inp.dataset.source)
    assert source["md5"] == dataset.version.md5 and source["url"] == s.dvc.remote_url
    assert source["git_commit"] == run.data.tags["git_sha"]
    assert json.loads(inp.dataset.profile)["num_rows"] == dataset.rows
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    assert run.data.params["train.batch_size"] == str(s.train.batch_size)
    assert run.data.params["data.version"] == dataset.version.md5
    names = {a.path for a in _client(s).list_artifacts(run_id, "config")}
    assert names == {"config/resolved.json"}
    # the MLflow UI opens keel's experiment on model training, not on GenAI traces
    experiment = _client(s).get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_train_model_logs_per_epoch_metrics(trained):
    s, run_id = trained["settings"], trained["run_id"]
    history = _client(s).get_metric_history(run_id, "val/loss")
    assert len(history) == trained["model"].epochs_run == s.train.max_epochs
    assert _client(s).get_metric_history(run_id, "train/loss")


def test_evaluate_and_log_evaluation(trained):
    s, run_id, ev = trained["settings"], trained["run_id"], trained["evaluation"]
    from sklearn import metrics as sk

    # the same numbers computed independently from the test labels and the prediction table
    y, out = ev.y_test.astype(int).to_numpy(), ev.out_test
    prob, label = out["probability"].to_numpy(), out[s.features.label].astype(int).to_numpy()
    expected = {
        "accuracy": sk.accuracy_score(y, label),
        "precision": sk.precision_score(y, label, zero_division=0),
        "recall": sk.recall_score(y, label),
        "f1": sk.f1_score(y, label),
        "roc_auc": sk.roc_auc_score(y, prob),
        "log_loss": sk.log_loss(y, prob, labels=[0, 1]),
    }
    for key, value in expected.items():
        assert ev.metrics[f"test/{key}"] == pytest.approx(value, abs=1e-9), key
    assert 0.5 < ev.metrics["test/roc_auc"] < 1.0  # better than chance on real flights, not perfect
    assert ev.metrics["test/rows"] == len(trained["splits"].test)
    assert set(ev.slices["slice"]) == {"origin", "carrier"}
    paths = log_evaluation.fn(s.mlflow_store, ev, run_id)
    c = _client(s)
    logged = {a.path for a in c.list_artifacts(run_id, "evaluation/plots")}
    assert logged == {
        "evaluation/plots/confusion_matrix.png",
        "evaluation/plots/roc_curve.png",
        "evaluation/plots/pr_curve.png",
    }
    assert "evaluation/slices.csv" in paths
    assert c.get_run(run_id).data.metrics["test/f1"] == pytest.approx(ev.metrics["test/f1"])


def test_register_sets_challenger_only(trained):
    s = trained["settings"]
    args = (
        s,
        trained["model"],
        trained["splits"],
        trained["run_id"],
        trained["dataset"],
        trained["validation"],
        trained["evaluation"],
    )
    first = register_model.fn(*args)
    assert first.aliases == ["challenger"]
    c = _client(s)
    mv = c.get_model_version(s.mlflow.model_name, first.version)
    assert mv.tags["data_version"] == trained["dataset"].version.md5
    assert mv.tags["validation_status"] == "passed" and mv.tags["data_in_remote"] == "verified"
    assert {"git_sha", "config_hash", "test/f1", "test/roc_auc", "env_hash", "weights_sha256"} <= set(mv.tags)
    second = register_model.fn(*args)
    assert str(c.get_model_version_by_alias(s.mlflow.model_name, "challenger").version) == second.version
    with pytest.raises(MlflowException, match="champion"):
        c.get_model_version_by_alias(s.mlflow.model_name, "champion")  # promotion is the policy's job
    end_run.fn(s.mlflow_store, trained["run_id"])
    assert c.get_run(trained["run_id"]).info.status == "FINISHED"
    md = summary_markdown(
        s.mlflow_store, trained["dataset"], trained["validation"], trained["evaluation"], second
    )
    assert f"v{second.version}" in md and trained["dataset"].version.md5 in md and "test/f1" in md
