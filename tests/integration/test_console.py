"""The keel command's console, run as a user runs it (a subprocess, output not a terminal):
step lines and a summary, no third-party INFO line and no DVC hint; the engines' logs in
the log file it names, and on the console with -v; --json objects that parse and match
their documented schemas (keel/cli/schemas); a rejected model says nothing changed."""

import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# what the engines print at INFO, and DVC's advice that keel's own commits make wrong
ENGINE_NOISE = re.compile(
    r"\bINFO\b|Finished in state|Created (task|flow) run|ephemeral docs site|Creating initial MLflow"
    r"|Validating input example|To track the changes with git|autostage|dvc config"
)


def _keel(ws: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(ws), "-p", "test", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
    )


def _schema(name: str) -> dict:
    return json.loads(resources.files("keel.cli").joinpath(f"schemas/{name}.json").read_text())


def _one_json(proc: subprocess.CompletedProcess, schema: str) -> dict:
    import jsonschema

    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout must hold one JSON object and nothing else:\n{proc.stdout}"
    payload = json.loads(lines[0])
    jsonschema.validate(payload, _schema(schema))
    return payload


def _log_named(out: str) -> Path:
    match = re.search(r"log\s+(\S+\.log)", out)
    assert match, f"no log file named in:\n{out}"
    return Path(match.group(1))


def test_steps_and_summaries_not_engine_logs_json_by_schema_and_a_rejection_said_plainly(synthetic):
    ws = synthetic.workspace
    ingest = _keel(ws, "ingest", "--batch", "b01")
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    out = ingest.stdout + ingest.stderr
    assert not ENGINE_NOISE.search(out), out
    assert "ok     validate-batches" in out and "ingested b01 -> data version" in out
    log = _log_named(out)
    log = log if log.is_absolute() else ws / log
    assert "Finished in state Completed" in log.read_text()  # Prefect's INFO lines: in the file

    # a model the gate rejects, as a person reads it: exit 1, said plainly, no champion made
    impossible = {"KEEL_GATE__METRICS": json.dumps({"test/roc_auc": {"min": 1.01}})}
    train = _keel(ws, "train", env=impossible)
    assert train.returncode == 1, train.stdout + train.stderr
    out = train.stdout + train.stderr
    assert not ENGINE_NOISE.search(out), out
    for needle in (
        "ok     train-model",  # one line per step
        "epoch 1/1  ",  # one line per epoch off a terminal
        "registered models:/synthetic/1: REJECTED by the gate, held; no champion yet",
        "data      ",
        "test/roc_auc",
        "gate      rejected: ",
        "FAIL  test/roc_auc >= 1.01",
        "aliases   challenger v- -> v1",
        "MLflow    run ",
        "Prefect   flow run ",
        "next      keel lineage 1",
    ):
        assert needle in out, f"{needle!r} not in:\n{out}"
    assert "champion v" not in out

    # --json: one object on stdout; -v: the engines' logs on the console (stderr here)
    blessed = _keel(ws, "-v", "train", "--json")
    assert blessed.returncode == 0, blessed.stdout + blessed.stderr
    assert "Finished in state Completed" in blessed.stderr
    second = _one_json(blessed, "train")
    assert second["version"] == "2" and second["gate"]["passed"] and second["gate"]["rules"]
    assert second["aliases"] == {
        "before": {"champion": None, "challenger": "1"},
        "after": {"champion": "2", "challenger": "2"},
    }
    assert second["champion_metrics"] is None and "test/roc_auc" in second["metrics"]
    assert Path(second["log"]).is_file() and second["next"].startswith("keel serve")

    status = _one_json(_keel(ws, "status", "--json"), "status")
    assert status["champion"]["version"] == "2" and status["challenger"]["version"] == "2"
    history = _one_json(_keel(ws, "history", "--json"), "history")
    assert [e["to_version"] for e in history["entries"]] == ["2"]
    drift = _one_json(_keel(ws, "drift", "--batch", "b01", "--json"), "drift")
    assert drift["compared"] and not drift["drifted"] and len(drift["features"]) == 6
    assert drift["features"] == sorted(drift["features"], key=lambda f: -f["effect"])
    guard = _one_json(_keel(ws, "guard", "--batch", "b01", "--json"), "guard")
    assert guard["champion"] == guard["champion_after"] == "2" and guard["batches"] == ["b01"]
    assert guard["status"] in ("held", "unjudged") and guard["rows"] > 0
    replay = _keel(ws, "replay", "2", "--json")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    replayed = _one_json(replay, "replay")
    assert replayed["identical"] and replayed["version"] == "2" and Path(replayed["report"]["json"]).is_file()

    # a review nobody answers: Prefect fails the paused run at the timeout; keel says so, exit 1
    unanswered = _keel(ws, "review", "1", "--timeout", "2", "--json")
    assert unanswered.returncode == 1, unanswered.stdout + unanswered.stderr
    assert _one_json(unanswered, "review")["decision"] == "no decision"
    assert not ENGINE_NOISE.search(unanswered.stderr) and "ERROR" not in unanswered.stderr, unanswered.stderr
    assert _one_json(_keel(ws, "status", "--json"), "status")["champion"]["version"] == "2"

    # an ingest of many batches counts them (GX on each) with an ETA, a line each off a terminal
    many = _keel(ws, "ingest", "--from", "b02", "--to", "b05")
    assert many.returncode == 0, many.stdout + many.stderr
    assert not ENGINE_NOISE.search(many.stdout + many.stderr), many.stdout + many.stderr
    counted = [
        line.split() for line in many.stdout.splitlines() if line.startswith("         validate-batches")
    ]
    assert [c[1] for c in counted] == ["1/4", "2/4", "3/4"] and all(c[3] == "ETA" for c in counted)
    shipped = _one_json(_keel(ws, "workloads", "--json"), "workloads")
    assert "synthetic" in {w["name"] for w in shipped["workloads"]}
    bad = _keel(ws, "ingest", "--batch", "nope", "--json")
    assert bad.returncode == 2 and _one_json(bad, "error")["exit_code"] == 2
