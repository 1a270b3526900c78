"""keel tune on the synthetic workload: a 4-trial Optuna study whose trials run as Prefect
task runs in a process pool, child MLflow runs under the study's run, the study's plots,
the best config trained through the gate with its lineage; the study resumed on a Dask
cluster (a real scheduler, its workers threads of this process: no per-worker imports);
the same study drawn twice gives the same configs."""

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def tunable(synthetic):
    from flows.ingest import ingest_flow

    ingest_flow(synthetic, ["b01", "b02"])
    # three short epochs: the median pruner may stop a trial after the first
    return synthetic.with_overrides({"train.max_epochs": 3, "tune.warmup_epochs": 1, "tune.trials": 4})


def _study(s, name):
    import optuna

    from tasks.tune import storage_url

    return optuna.load_study(study_name=name, storage=storage_url(s.tune, s.mlflow_store))


def test_a_study_fans_out_registers_its_best_config_and_resumes(tunable, matches_schema):
    from flows.tune import tune_flow
    from keel.cli import summary
    from keel.errors import InputError
    from keel.registry.tracking import client
    from tasks.tune import task_runner

    s = tunable
    out = tune_flow.with_options(task_runner=task_runner(s.tune))(s)
    # what keel tune prints (and --json, by its schema): the study, then the best config's training
    said = matches_schema(summary.tune(s, out, {"champion": None, "challenger": None}), "tune")
    assert said["trials"] == out.summary["trials"] and said["best"]["trial"] == out.summary["best_trial"]
    assert said["train"]["version"] == "1" and said["train"]["aliases"]["after"]["champion"] == "1"
    text = "\n".join(summary.tune_text(s, said))
    assert text.startswith("study synthetic-tune: ") and "(this session: 4 trials)" in text
    assert f"best      trial {said['best']['trial']}, val/loss " in text
    assert "registered models:/synthetic/1: blessed by the gate" in text
    study = _study(s, out.study)
    assert out.study == "synthetic-tune" and len(study.trials) == 4
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
    assert (s.workspace / "mlflow" / "optuna.db").is_file()  # beside the embedded MLflow store
    assert len({r.run_id for r in out.trials}) == 4

    c = client(s.mlflow_store)
    exp = c.get_experiment_by_name(s.mlflow.experiment)
    children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{out.run_id}'")
    assert len(children) == 4 and all("train.lr" in r.data.params for r in children)
    complete = [r for r in children if r.data.tags["tune.state"] == "complete"]
    assert complete and all(
        "val/loss" in c.get_metric_history(r.info.run_id, "val/loss")[0].key for r in complete
    )
    plots = {f.path for f in c.list_artifacts(out.run_id, "tune")}
    assert {"tune/optimization_history.png", "tune/param_importances.png"} <= plots

    # the best config went through the normal flow; the version names its study and trial
    best = study.best_trial
    reg = out.registered
    assert reg.version == "1" and "champion" in reg.aliases
    tags = c.get_model_version(s.mlflow.model_name, reg.version).tags
    assert tags["tune.study"] == out.study and tags["tune.trial"] == str(best.number)
    resolved = json.loads(Path(c.download_artifacts(reg.run_id, "config/resolved.json")).read_text())
    assert resolved["train"]["lr"] == pytest.approx(best.params["train.lr"])
    assert resolved["tune"]["from_trial"] == best.number

    # a new study under the same name is refused; --resume continues it, here on Dask
    with pytest.raises(InputError, match="exists"):
        tune_flow.with_options(task_runner=task_runner(s.tune))(s)
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        more = s.with_overrides(
            {"tune.trials": 1, "tune.runner": "dask", "tune.dask_address": cluster.scheduler_address}
        )
        again = tune_flow.with_options(task_runner=task_runner(more.tune))(
            more, resume=True, train_best=False
        )
    assert len(_study(s, again.study).trials) == 5 and again.summary["this_session"] == [4]
    assert again.registered is None and again.summary["trials"].get("complete", 0) >= 1
    searched = matches_schema(summary.tune(more, again, {}), "tune")
    assert searched["train"] is None and searched["this_session"] == [4]
    assert summary.tune_text(more, searched)[-1].startswith("  next      keel train with the params")


def test_the_same_study_twice_draws_the_same_configs(tunable):
    from flows.tune import tune_flow
    from tasks.tune import task_runner

    one = tunable.with_overrides({"tune.trials": 2, "tune.concurrency": 1, "tune.runner": "thread"})
    a = tune_flow.with_options(task_runner=task_runner(one.tune))(
        one.with_overrides({"tune.study": "a"}), train_best=False
    )
    b = tune_flow.with_options(task_runner=task_runner(one.tune))(
        one.with_overrides({"tune.study": "b"}), train_best=False
    )
    pa, pb = _study(one, "a").trials, _study(one, "b").trials
    assert [t.params for t in pa] == [t.params for t in pb] and pa[0].params != pa[1].params
    assert [t.value for t in pa] == pytest.approx([t.value for t in pb])
    assert a.summary["best_trial"] == b.summary["best_trial"]
