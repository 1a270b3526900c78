"""The workload seam: chosen by config (a shipped name or a module:Class target), its
params validated by its own model, its data source used by the ingest and schedule
tasks, its split key honoured; the default config hashes as before workloads."""

import textwrap

import pandas as pd
import pytest

from keel.errors import InputError
from keel.settings import ConfigError, load_settings
from keel.workload import Workload, build, load_workload

# A user's own workload, as it would live in their package: importable as module:Class.
TINY = textwrap.dedent(
    """
    import pandas as pd
    from pydantic import Field
    from keel.workload import Workload, WorkloadParams

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
        ("nope", "", r"workload.name 'nope' is not shipped \(known: flights\)"),
        ("flights", "os.path", r"write it as module:Class"),
        ("flights", "no_such_module_anywhere:W", r"No module named 'no_such_module_anywhere'"),
        ("flights", "os:path", r"not a keel.workload.Workload subclass"),
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
    batches = build_batches.fn(settings, ["w1", "w2"], {})
    assert [b.name for b in batches] == ["w1", "w2"]
    assert list(batches[1].frame["week"].unique()) == ["w2"]
    assert pending_months.fn(settings, None, None) == ["w1"]  # nothing ingested yet


def test_the_split_hashes_the_workloads_key_and_names_a_missing_column():
    from keel.dataset import split_frame

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
    from keel.workload import suite_path

    flights = load_settings(tmp_path, environ={})
    assert suite_path(flights).name == "flights.json"
    tiny = flights.with_overrides({"workload.target": tiny_target})
    with pytest.raises(ConfigError, match=r"workload .tiny. ships no default suite: set data\.suite"):
        suite_path(tiny)
    own = tiny.with_overrides({"data.suite": str(tmp_path / "mine.json")})
    assert suite_path(own) == tmp_path / "mine.json"
