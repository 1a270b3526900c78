from pathlib import Path

import pytest

from keel.config.settings import find_workspace, load_settings
from keel.errors import ConfigError


def test_defaults_resolve_every_location_inside_the_workspace(tmp_path):
    s = load_settings(tmp_path, environ={})
    assert s.workspace == tmp_path.resolve()
    assert s.data.dir == tmp_path.resolve() / "data"
    assert s.dvc_file == tmp_path.resolve() / "data.dvc"
    assert s.mlflow.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert s.mlflow.registry_uri == s.mlflow.tracking_uri
    assert s.mlflow.artifact_root == (tmp_path.resolve() / "mlflow" / "artifacts").as_uri()
    assert s.dvc.remote_url == str(tmp_path.resolve() / "dvc-remote")
    assert s.prefect.api_url == ""
    from keel.workloads import load_suite_for

    assert s.data.suite is None  # the workload's own
    assert load_suite_for(s)["name"] == "flights"


def test_layers_workspace_file_then_profile_then_env_then_overrides(tmp_path):
    (tmp_path / "keel.toml").write_text(
        '[train]\nmax_epochs = 7\nlr = 0.1\n[mlflow]\nmodel_name = "ws-model"\n'
        "[profiles.mine]\ntrain.max_epochs = 3\n"
    )
    s = load_settings(tmp_path, environ={})
    assert (s.train.max_epochs, s.train.lr, s.mlflow.model_name) == (7, 0.1, "ws-model")
    s = load_settings(tmp_path, profile="mine", environ={})
    assert s.train.max_epochs == 3 and s.train.lr == 0.1
    env = {
        "KEEL_TRAIN__MAX_EPOCHS": "5",
        "KEEL_TRAIN__HIDDEN": "[8, 4]",
        "KEEL_MLFLOW__TRACKING_URI": "http://127.0.0.1:5999",
    }
    s = load_settings(tmp_path, profile="mine", environ=env)
    assert s.train.max_epochs == 5 and s.train.hidden == [8, 4]
    assert s.mlflow.tracking_uri == s.mlflow.registry_uri == "http://127.0.0.1:5999"
    s = load_settings(tmp_path, profile="mine", environ=env, overrides={"train.max_epochs": 1})
    assert s.train.max_epochs == 1


def test_packaged_profiles_shrink_a_real_run(tmp_path):
    base = load_settings(tmp_path, environ={})
    test = load_settings(tmp_path, profile="test", environ={})
    assert test.train.max_epochs < base.train.max_epochs
    assert test.data.sample_rows > 0
    assert test.features == base.features  # same model, smaller run


def test_workspace_and_profile_from_environment(tmp_path):
    (tmp_path / "keel.toml").write_text("")
    s = load_settings(environ={"KEEL_WORKSPACE": str(tmp_path), "KEEL_PROFILE": "debug"})
    assert s.workspace == tmp_path.resolve() and s.profile == "debug"


def test_find_workspace_walks_up(tmp_path):
    (tmp_path / "keel.toml").write_text("")
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert find_workspace(tmp_path / "a" / "b") == tmp_path.resolve()
    with pytest.raises(ConfigError, match="keel init"):
        find_workspace(Path("/"))


@pytest.mark.parametrize(
    "content,env,needle",
    [
        ("[train]\nmax_epochs = 0\n", {}, "max_epochs"),
        ("[train]\nunknown_knob = 1\n", {}, "unknown_knob"),
        ("[train\n", {}, "keel.toml"),
        ("", {"KEEL_TRAIN__HIDDEN": "[1,"}, "KEEL_TRAIN__HIDDEN"),
    ],
)
def test_bad_settings_name_the_field(tmp_path, content, env, needle):
    (tmp_path / "keel.toml").write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_settings(tmp_path, environ=env)


def test_unknown_profile(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        load_settings(tmp_path, profile="nope", environ={})


def test_config_hash_tracks_model_inputs_only(tmp_path):
    a = load_settings(tmp_path, environ={})
    b = load_settings(tmp_path, environ={"KEEL_MLFLOW__EXPERIMENT": "other"})
    c = load_settings(tmp_path, environ={"KEEL_TRAIN__LR": "0.5"})
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_mlflow_environment_variables_are_a_layer_below_keel_ones(tmp_path):
    (tmp_path / "keel.toml").write_text('[dvc]\nremote_url = "elsewhere"\n')
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5101"}
    s = load_settings(tmp_path, environ=env)
    assert s.mlflow.tracking_uri == s.mlflow.registry_uri == "http://127.0.0.1:5101"
    assert s.mlflow.artifact_root == ""  # the tracking server decides where artifacts go
    assert s.sources["mlflow.tracking_uri"] == "env MLFLOW_TRACKING_URI"
    assert s.sources["mlflow.registry_uri"] == "derived: = mlflow.tracking_uri"
    assert s.sources["dvc.remote_url"] == str(tmp_path / "keel.toml")
    assert s.sources["data.dir"].startswith("default")

    env["MLFLOW_REGISTRY_URI"] = "http://127.0.0.1:5102"
    s = load_settings(tmp_path, environ=env)
    assert (s.mlflow.tracking_uri, s.mlflow.registry_uri) == (
        "http://127.0.0.1:5101",
        "http://127.0.0.1:5102",
    )
    assert s.sources["mlflow.registry_uri"] == "env MLFLOW_REGISTRY_URI"

    env["KEEL_MLFLOW__TRACKING_URI"] = "http://127.0.0.1:5200"  # keel's own variable wins
    s = load_settings(tmp_path, environ=env)
    assert s.mlflow.tracking_uri == "http://127.0.0.1:5200"
    assert s.sources["mlflow.tracking_uri"] == "env KEEL_MLFLOW__TRACKING_URI"
    assert s.sources["mlflow.registry_uri"] == "env MLFLOW_REGISTRY_URI"

    s = load_settings(tmp_path, environ={})
    assert s.mlflow.tracking_uri.startswith("sqlite:///")
    assert s.sources["mlflow.tracking_uri"] == "derived: sqlite under <workspace>/mlflow/"
    assert (
        s.with_overrides({"mlflow.tracking_uri": "http://h:1"}).sources["mlflow.tracking_uri"] == "override"
    )


def test_keel_config_shows_where_each_location_came_from(tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:5101", "KEEL_DVC__REMOTE_URL": "/srv/dvc"}
    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(tmp_path), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mlflow"]["tracking_uri"] == "http://127.0.0.1:5101"
    assert out["sources"]["mlflow.tracking_uri"] == "env MLFLOW_TRACKING_URI"
    assert out["sources"]["dvc.remote_url"] == "env KEEL_DVC__REMOTE_URL"


def test_debug_profile_stays_larger_than_test_and_test_the_smallest(tmp_path):
    debug = load_settings(tmp_path, profile="debug", environ={})
    test = load_settings(tmp_path, profile="test", environ={})
    assert test.data.sample_rows < debug.data.sample_rows
    assert test.train.max_epochs <= debug.train.max_epochs
    # debug keeps the default gate: its champion is a real one (tests/integration/test_profiles.py)
    assert debug.gate == load_settings(tmp_path, environ={}).gate


def test_mlflow_exporting_its_uri_does_not_redirect_later_workspaces(tmp_path, monkeypatch):
    """MLflow writes MLFLOW_TRACKING_URI into os.environ on set_tracking_uri(); keel reads the
    user's value from before that, so a second workspace in the same process keeps its own store."""
    import mlflow

    import keel.config.settings as ks

    monkeypatch.setattr(ks, "_process_mlflow_env", None)  # as in a fresh process
    first = load_settings(tmp_path / "a")
    mlflow.set_tracking_uri(first.mlflow.tracking_uri)
    try:
        import os

        assert os.environ["MLFLOW_TRACKING_URI"] == first.mlflow.tracking_uri  # MLflow's export
        second = load_settings(tmp_path / "b")
        assert second.mlflow.tracking_uri == f"sqlite:///{(tmp_path / 'b').resolve()}/mlflow/mlflow.db"
    finally:
        mlflow.set_tracking_uri(None)


def _recorded_v1() -> dict:
    """config/resolved.json as keel recorded it before workloads (config_version 1), made
    by that keel's load_settings(profile="test") for a workspace at /WORKSPACE."""
    import json

    return json.loads((Path(__file__).parents[1] / "fixtures" / "resolved-config-v1.json").read_text())


def test_a_config_recorded_before_workloads_migrates_and_hashes_as_recorded(tmp_path):
    from keel.config.settings import CONFIG_VERSION, Settings, migrate

    old = _recorded_v1()
    assert "config_version" not in old and "workload" not in old and "demo_months" in old["data"]
    migrated = Settings.model_validate(migrate(old))
    assert migrated.config_version == CONFIG_VERSION == 2
    assert migrated.workload.name == "flights" and migrated.workload.is_default()
    assert migrated.data.demo_batches == old["data"]["demo_months"]
    # the model inputs are untouched: the hash that versions registered then carry still holds
    assert migrated.config_hash() == "eba348fb0413"
    assert migrate(migrate(old)) == migrate(old)  # current configs pass through unchanged
    # a recorded config without split.holdout trained on the random split, as it was
    assert migrated.split.holdout == "random" and "holdout" not in migrated.model_inputs()["split"]
    # and today's flights defaults (now the workload's layer) resolve to the same model inputs,
    # but for the newest-batch holdout that became the default after it
    today = load_settings(tmp_path, profile="test", environ={})
    assert today.split.holdout == "newest" and today.model_inputs()["split"]["holdout"] == "newest"
    random = today.with_overrides({"split.holdout": "random"})
    assert random.model_inputs() == migrated.model_inputs()


def test_a_config_from_a_newer_keel_is_refused():
    from keel.config.settings import migrate

    with pytest.raises(ConfigError, match="config_version 99 was recorded by a newer keel"):
        migrate({**_recorded_v1(), "config_version": 99})
