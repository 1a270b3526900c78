"""Dataset versions, lineage and replay on real git + DVC (local remote) in tmp dirs."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from keel.data.validation import DataValidationError
from keel.data.workspace import DataVersionError

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _snapshot(settings) -> dict[str, str]:
    """Every file of data/, data.dvc and the remote, by content."""
    roots = [settings.data.dir, Path(settings.dvc.remote_url)]
    files = [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()]
    if settings.dvc_file.exists():
        files.append(settings.dvc_file)
    return {str(p): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _git(settings, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=settings.workspace, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def _remove_from_remote(settings, partition: str) -> None:
    import json

    from keel.data.workspace import read_data_version

    md5 = read_data_version(settings.dvc_file).md5
    remote = Path(settings.dvc.remote_url) / "files" / "md5"
    manifest = json.loads((remote / md5[:2] / md5[2:]).read_text())
    (entry,) = [e for e in manifest if e["relpath"] == f"{partition}.parquet"]
    (remote / entry["md5"][:2] / entry["md5"][2:]).unlink()


def test_replay_of_v1_while_v3_is_current_is_identical(workspace, matches_schema):
    from flows.ingest import ingest_flow
    from flows.replay import replay_flow
    from flows.train import train_flow
    from keel.data.workspace import read_data_version
    from keel.registry.lineage import numerics
    from keel.registry.tracking import client
    from tasks.lineage import load_lineage

    v1 = ingest_flow(workspace, ["2013-01"])
    lineage_bytes = _md5(workspace.data.dir / "2013-01.parquet")
    v1_commit = _git(workspace, "rev-parse", "HEAD")
    model_v1 = train_flow(workspace)
    v2 = ingest_flow(workspace, ["2013-02"])
    v3 = ingest_flow(workspace, ["2013-03"])
    assert len({v1.md5, v2.md5, v3.md5}) == 3 and v3.files == 3
    model_v3 = train_flow(workspace)

    # one commit per accepted data version, and each model version names the one it used
    assert _git(workspace, "log", "--format=%s", "--", "data.dvc").splitlines() == [
        f"data: {month} (md5 {v.md5})" for month, v in (("2013-03", v3), ("2013-02", v2), ("2013-01", v1))
    ]
    assert _git(workspace, "status", "--porcelain", "--untracked-files=no") == ""

    lineage = load_lineage.fn(workspace.mlflow_store, workspace.data_store, model_v1.version)
    assert lineage.data_commit == v1_commit
    run = client(workspace.mlflow_store).get_run(lineage.run_id)
    assert run.data.tags["mlflow.source.git.commit"] == lineage.data_commit == run.data.tags["data_commit"]
    assert f"git checkout {lineage.data_commit} && dvc pull" in lineage.describe()

    # a teammate's clone, at v1's commit, with DVC's own CLI: v1's bytes
    mate = workspace.workspace.parent / "mate"
    subprocess.run(["git", "clone", "-q", str(workspace.workspace), str(mate)], check=True)
    subprocess.run(["git", "checkout", "-q", lineage.data_commit], cwd=mate, check=True)
    dvc = [sys.executable, "-m", "dvc"]
    pull = subprocess.run([*dvc, "pull"], cwd=mate, capture_output=True, text=True)
    assert pull.returncode == 0, pull.stderr
    assert sorted(p.name for p in (mate / "data").iterdir()) == ["2013-01.parquet"]
    assert read_data_version(mate / "data.dvc").md5 == v1.md5
    assert _md5(mate / "data" / "2013-01.parquet") == lineage_bytes
    assert lineage.data_version == v1.md5 and lineage.partitions == {"2013-01": workspace.data.sample_rows}
    assert lineage.config_hash == workspace.config_hash() and len(lineage.env_hash) == 16
    assert any(p.startswith("torch==") for p in lineage.packages)
    text = lineage.describe()
    assert v1.md5 in text and "2013-01" in text and lineage.weights_sha256 in text
    assert (
        load_lineage.fn(workspace.mlflow_store, workspace.data_store, model_v3.version).data_version == v3.md5
    )

    before, head = _snapshot(workspace), _git(workspace, "rev-parse", "HEAD")
    report = replay_flow(workspace, model_v1.version)
    assert _snapshot(workspace) == before, "replay must not touch data/, data.dvc or the remote"
    assert _git(workspace, "rev-parse", "HEAD") == head  # nor the workspace's git history
    assert report.metrics_identical, report.deltas
    assert report.deltas and all(d == 0.0 for d in report.deltas.values())
    assert {"test/roc_auc", "test/f1", "val/log_loss"} <= set(report.deltas)
    assert report.weights_equal
    assert report.environment == {"removed": [], "added": [], "changed": []}
    assert report.same_numerics and lineage.numerics == numerics() and "torch" in lineage.numerics
    assert f"trained on:   {lineage.numerics}" in text
    md = workspace.reports.dir / "replay" / f"{workspace.mlflow.model_name}-v{model_v1.version}.md"
    assert "metrics identical: **True**" in md.read_text()

    # what keel replay prints (and --json, by its schema)
    from keel.cli import summary

    out = matches_schema(summary.replay(workspace, report), "replay")
    assert out["identical"] and out["report"]["markdown"] == str(md) and out["next"] is None
    text = "\n".join(summary.replay_text(out))
    assert f"v{model_v1.version}: IDENTICAL" in text and f"all {len(report.deltas)} identical" in text
    assert "weights   equal" in text and "0 changed, 0 added, 0 removed" in text
    assert f"cpu       trained on {lineage.numerics}, rebuilt on the same" in text


def test_a_corrupt_batch_is_rejected_and_changes_nothing(workspace, tmp_path):
    from flows.ingest import ingest_flow

    ingest_flow(workspace, ["2013-01"])
    before = _snapshot(workspace)
    versions_log = (workspace.workspace / "data-versions.jsonl").read_text()
    head = _git(workspace, "rev-parse", "HEAD")
    batch = pd.read_parquet(workspace.data.dir / "2013-01.parquet").head(1200).copy()
    batch.loc[batch.index[:5], "dest"] = "NOWHERE"
    path = tmp_path / "late-batch.parquet"
    batch.to_parquet(path)

    with pytest.raises(DataValidationError) as err:
        ingest_flow(workspace, [], {"late-batch": path})
    assert str(path) in str(err.value) and "column 'dest'" in str(err.value)
    assert _snapshot(workspace) == before
    assert not (workspace.data.dir / "late-batch.parquet").exists()
    assert (workspace.workspace / "data-versions.jsonl").read_text() == versions_log
    assert _git(workspace, "rev-parse", "HEAD") == head  # a rejected batch makes no commit

    # the same rows, valid, go in as their own partition
    batch.loc[batch.index[:5], "dest"] = "IAH"
    batch.to_parquet(path)
    version = ingest_flow(workspace, [], {"late-batch": path})
    assert version.files == 2 and (workspace.data.dir / "late-batch.parquet").exists()


def test_missing_remote_object_is_caught_before_registration_and_by_replay(workspace):
    from flows.ingest import ingest_flow
    from flows.replay import replay_flow
    from flows.train import train_flow
    from keel.registry.tracking import client

    ingest_flow(workspace, ["2013-01"])
    registered = train_flow(workspace)
    ingest_flow(workspace, ["2013-02"])
    _remove_from_remote(workspace, "2013-02")

    with pytest.raises(DataVersionError, match=r"incomplete in DVC remote.*2013-02\.parquet"):
        train_flow(workspace)
    c = client(workspace.mlflow_store)
    versions = c.search_model_versions(f"name='{workspace.mlflow.model_name}'")
    assert [str(v.version) for v in versions] == [registered.version]
    exp = c.get_experiment_by_name(workspace.mlflow.experiment).experiment_id
    statuses = sorted(r.info.status for r in c.search_runs([exp]))
    assert statuses == ["FAILED", "FINISHED"]

    _remove_from_remote(workspace, "2013-01")  # now v1's data is gone from the remote too
    with pytest.raises(DataVersionError, match=r"incomplete in DVC remote.*2013-01\.parquet"):
        replay_flow(workspace, registered.version)


def test_an_ingest_killed_halfway_leaves_the_previous_version_usable(workspace):
    from dvc.repo import Repo

    from flows.ingest import ingest_flow
    from keel.data import partitions
    from keel.data.workspace import begin_ingest
    from tasks.data import build_batches, resolve_dataset

    v1 = ingest_flow(workspace, ["2013-01"])
    v1_pointer = workspace.dvc_file.read_text()
    # what a kill leaves behind after the new partition was written and `dvc add` ran,
    # but before push and the end of the ingest
    begin_ingest(workspace.data_store)
    (batch,) = build_batches.fn(
        workspace.workload, workspace.data_store, workspace.data.sample_rows, ["2013-02"], {}
    )
    partitions.write_partition(batch.frame, partitions.partition_path(workspace.data.dir, "2013-02"))
    with Repo(str(workspace.workspace)) as repo:
        repo.add(str(workspace.data.dir))
    assert workspace.dvc_file.read_text() != v1_pointer

    ref = resolve_dataset.fn(workspace.data_store)
    assert ref.version == v1 and ref.partition_names == ["2013-01"]
    assert workspace.dvc_file.read_text() == v1_pointer
    assert sorted(p.name for p in workspace.data.dir.iterdir()) == ["2013-01.parquet"]


def test_a_version_recorded_in_the_layout_before_workloads_replays_identically(workspace):
    """The run's config/resolved.json replaced by the one keel recorded before workloads
    existed (tests/fixtures: no config_version, no [workload], data.demo_months, a suite
    path on another machine): lineage migrates it and the replay is identical."""
    import json

    from flows.ingest import ingest_flow
    from flows.replay import replay_flow
    from flows.train import train_flow
    from keel.registry.tracking import client
    from tasks.lineage import load_lineage

    workspace = workspace.with_overrides(
        {"split.holdout": "random"}
    )  # as keel trained before the forward gate
    ingest_flow(workspace, ["2013-01"])
    registered = train_flow(workspace)
    fixture = Path(__file__).parents[1] / "fixtures" / "resolved-config-v1.json"
    old = fixture.read_text().replace("/WORKSPACE", str(workspace.workspace))
    assert "workload" not in json.loads(old) and "config_version" not in json.loads(old)
    run = client(workspace.mlflow_store).get_run(registered.run_id)
    recorded = Path(run.info.artifact_uri.removeprefix("file://")) / "config" / "resolved.json"
    assert recorded.is_file()
    recorded.write_text(old)  # the artifact as the previous layout wrote it

    lineage = load_lineage.fn(workspace.mlflow_store, workspace.data_store, registered.version)
    assert lineage.config["config_version"] == 2 and lineage.config["workload"]["name"] == "flights"
    assert lineage.config_hash == workspace.config_hash()
    report = replay_flow(workspace, registered.version)
    assert report.metrics_identical and report.weights_equal, report.deltas
