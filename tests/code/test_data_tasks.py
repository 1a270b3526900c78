"""Data tasks on tiny real frames, against a real git + DVC workspace in tmp."""

import hashlib
import json

import pandas as pd
import pytest

from keel.data import partitions
from keel.data.workspace import DataVersionError, read_data_version
from keel.workloads.flights import data as ds
from tasks.data import (
    build_batches,
    commit_batches,
    load_splits,
    resolve_dataset,
    validate_batches,
    validate_data,
)


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_batches_are_built_in_memory_then_committed_as_deterministic_files(workspace):
    batches = build_batches.fn(
        workspace.workload, workspace.data_store, workspace.data.sample_rows, ["2013-01", "2013-02"], {}
    )
    assert [b.name for b in batches] == ["2013-01", "2013-02"]
    assert all(len(b.frame) == workspace.data.sample_rows for b in batches)
    assert not workspace.data.dir.exists()  # building writes nothing
    commit_batches.fn(workspace.data_store, batches)
    first = workspace.data.dir / "2013-01.parquet"
    digest = _md5(first)
    commit_batches.fn(
        workspace.data_store,
        build_batches.fn(
            workspace.workload, workspace.data_store, workspace.data.sample_rows, ["2013-01"], {}
        ),
    )
    assert _md5(first) == digest
    frame = pd.read_parquet(first)
    assert list(frame.columns) == ds.COLUMNS and set(frame["month"]) == {1}


def test_month_features_are_known_before_departure(source):
    frame = ds.build_month(*source, "2013-03")
    leaks = {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "tailnum"}
    assert not leaks & set(frame.columns)
    flights = source[0]
    march = flights[(flights.month == 3)]
    expected = (~(march["arr_delay"] < 15)).sum()  # late, cancelled or diverted
    assert frame["delayed"].sum() == expected and len(frame) == len(march)
    assert frame["wind_speed"].max() <= ds.MAX_WIND_MPH


def test_commit_adds_pushes_and_records_the_version(workspace):
    from pathlib import Path

    version = commit_batches.fn(
        workspace.data_store,
        build_batches.fn(
            workspace.workload, workspace.data_store, workspace.data.sample_rows, ["2013-01"], {}
        ),
    )
    assert version == read_data_version(workspace.dvc_file)
    assert version.md5.endswith(".dir") and version.files == 1
    objects = {p.parent.name + p.name for p in Path(workspace.dvc.remote_url).rglob("*") if p.is_file()}
    assert version.md5 in objects, "the version's .dir manifest is in the remote"
    log = [
        json.loads(line) for line in (workspace.workspace / "data-versions.jsonl").read_text().splitlines()
    ]
    assert log[-1]["md5"] == version.md5
    assert log[-1]["partitions"] == {"2013-01": workspace.data.sample_rows}


def test_validate_batches_checks_a_batch_alone(workspace, month_frame, tmp_path):
    bad = month_frame.assign(carrier="ZZ")
    path = tmp_path / "bad-batch.parquet"
    bad.to_parquet(path)
    batches = build_batches.fn(
        workspace.workload, workspace.data_store, workspace.data.sample_rows, ["2013-01"], {"bad-batch": path}
    )
    report = validate_batches.fn(workspace, batches)
    assert not report.success
    assert {f.file for f in report.failures} == {str(path)}  # names the user's file
    assert report.paths and all(p.exists() for p in report.paths)


def test_resolve_dataset_reports_partitions_and_rows(ingested):
    ref = resolve_dataset.fn(ingested.data_store)
    assert ref.partition_names == ["2013-01", "2013-02"]
    assert ref.rows == 2 * ingested.data.sample_rows
    assert ref.version == read_data_version(ingested.dvc_file)


def test_resolve_dataset_pulls_a_missing_data_dir_from_the_remote(ingested):
    import shutil

    shutil.rmtree(ingested.data.dir)
    ref = resolve_dataset.fn(ingested.data_store)
    assert ref.rows == 2 * ingested.data.sample_rows


def test_resolve_dataset_refuses_unrecorded_changes(ingested):
    path = ingested.data.dir / "2013-01.parquet"
    partitions.write_partition(pd.read_parquet(path).head(100), path)
    with pytest.raises(DataVersionError, match=r"differs from data\.dvc"):
        resolve_dataset.fn(ingested.data_store)


def test_resolve_dataset_without_any_version(workspace):
    with pytest.raises(DataVersionError, match="no dataset version yet"):
        resolve_dataset.fn(workspace.data_store)


def test_require_version_is_quiet_when_there_is_one(ingested):
    from keel.data.workspace import require_version

    require_version(ingested.data_store)


def test_require_version_says_it_before_a_flow_unless_an_ingest_is_to_recover(workspace):
    from keel.data.workspace import _journal, require_version

    with pytest.raises(DataVersionError, match=r"no dataset version yet\..*keel ingest --demo"):
        require_version(workspace.data_store)
    journal = _journal(workspace.data_store)  # an ingest killed halfway: the flow recovers it first
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text("{}")
    require_version(workspace.data_store)


def test_validate_data_passes_and_keeps_the_report(ingested):
    report = validate_data.fn(ingested, resolve_dataset.fn(ingested.data_store))
    assert report.success and report.status == "passed"
    rules = json.loads(ingested.data.suite.read_text())["expectations"]
    assert len(rules) > 0 and report.evaluated == 2 * len(rules)  # every rule on each of the 2 batches
    assert report.paths and all(p.exists() for p in report.paths)
    assert str(ingested.reports.dir) in str(report.paths[0])


def test_load_splits_are_disjoint_and_stable(ingested):
    ingested = ingested.with_overrides({"split.holdout": "random"})
    ref = resolve_dataset.fn(ingested.data_store)
    splits = load_splits.fn(ingested.workload, ingested.split, ref)
    assert splits.holdout.scheme == "random" and splits.refit is None
    sizes = splits.sizes()
    assert sum(sizes.values()) == ref.rows
    assert 0 < sizes["test"] < sizes["train"] and 0 < sizes["val"] < sizes["train"]
    keys = [
        set(map(tuple, s[ds.KEY_COLUMNS].to_numpy().tolist()))
        for s in (splits.train, splits.val, splits.test)
    ]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    # a row keeps its split when data grows: split one month alone, then with another
    jan = partitions.read_partition(ingested.data.dir / "2013-01.parquet")
    _, _, test_alone = ds.split_frame(jan, 10, 10, ingested.split.salt)
    jan_in_test = splits.test[splits.test["month"] == 1]
    assert test_alone[ds.KEY_COLUMNS].equals(jan_in_test[ds.KEY_COLUMNS].reset_index(drop=True))


def test_newest_holdout_trains_on_older_batches_gates_on_the_newest_and_refits_on_all(ingested):
    ref = resolve_dataset.fn(ingested.data_store)
    assert ingested.split.holdout == "newest" and not ingested.split.refit  # the defaults
    ingested = ingested.with_overrides({"split.refit": True})
    splits = load_splits.fn(ingested.workload, ingested.split, ref)
    assert splits.holdout.scheme == "newest" and splits.holdout.batches == ("2013-02",)
    assert (
        splits.holdout.rows
        == len(splits.test)
        == dict((p.path.stem, p.rows) for p in ref.partitions)["2013-02"]
    )
    # the gated fit never sees the newest batch; its val rows come from the older one
    assert set(splits.test["month"]) == {2}
    assert set(splits.train["month"]) == set(splits.val["month"]) == {1}
    assert len(splits.train) + len(splits.val) == ref.rows - len(splits.test)
    # the refit: every row of every batch, the same hash buckets deciding train vs val
    assert splits.refit is not None
    train_all, val_all = splits.refit
    assert len(train_all) + len(val_all) == ref.rows and set(train_all["month"]) == {1, 2}
    older_val = set(map(tuple, splits.val[ds.KEY_COLUMNS].to_numpy().tolist()))
    refit_val = set(map(tuple, val_all[ds.KEY_COLUMNS].to_numpy().tolist()))
    assert older_val <= refit_val and refit_val - older_val  # plus the newest batch's val rows
    # no refit asked: none prepared
    assert (
        load_splits.fn(
            ingested.with_overrides({"split.refit": False}).workload,
            ingested.with_overrides({"split.refit": False}).split,
            ref,
        ).refit
        is None
    )
    # one batch: the random split of it, and the holdout says why
    from keel.data.partitions import make_splits

    jan = {"2013-01": partitions.read_partition(ingested.data.dir / "2013-01.parquet")}
    one = make_splits(ingested.split, jan, ds.KEY_COLUMNS)
    assert one.holdout.scheme == "random" and "one batch only" in one.holdout.note and one.refit is None


def test_newest_holdout_with_one_batch_falls_back_to_the_random_split_and_says_why():
    from keel.data import partitions as parts

    assert parts.holdout_batches(["b02", "b01", "b03"], "newest") == (["b01", "b02"], ["b03"], "")
    older, newest, note = parts.holdout_batches(["2013-01"], "newest")
    assert (older, newest) == (["2013-01"], []) and "one batch" in note
    assert parts.holdout_batches(["b01", "b02"], "random") == (["b01", "b02"], [], "")
