"""Gate, policy, promote, rollback, out-of-band moves, the ledger and the lock, on a
real MLflow sqlite registry (the HTTP server path is in test_promotion_http.py)."""

import dataclasses
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from keel.errors import PromotionError
from keel.registry.promotion import Registry, promote, rollback, status

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _champion(s):
    return Registry(s.mlflow_store, s.promotion).alias("champion")


def test_first_champion_gate_tags_and_diff_card(ws):
    reg = Registry(ws.mlflow_store, ws.promotion)
    assert reg.alias("champion") == "1" and reg.alias("challenger") == "3"
    (initial,) = reg.ledger()
    assert (initial.action, initial.to_version, initial.from_version) == ("initial", "1", None)
    assert initial.evidence["servability"]["ok"] and initial.evidence["gate"] == "blessed"
    v3 = reg.client.get_model_version(reg.name, "3")
    assert v3.tags["gate.status"] == "blessed" and v3.tags["gate.baseline"] == "1"
    assert v3.tags["promotion"] == "awaiting review"
    card = reg.client.download_artifacts(v3.run_id, "gate/diff_card.md", str(ws.workspace))
    text = Path(card).read_text()
    assert "v3 vs champion v1" in text and "| train.lr | 0.005 | 0.02 |" in text
    assert "## Slice deltas" in text and "segment=a" in text


def test_reviewer_promotes_a_blessed_version_and_status_shows_it(ws):
    entry = promote(ws.mlflow_store, ws.promotion, "3", reviewer="alice", reason="better AUC on January")
    assert (entry.action, entry.actor, entry.from_version, entry.to_version) == ("promote", "alice", "1", "3")
    assert entry.evidence["servability"]["ok"] and entry.evidence["servability"]["rows"] == 5
    state = status(ws.mlflow_store, ws.promotion)
    assert state["champion"]["version"] == "3" and state["previous"]["version"] == "1"
    assert state["champion"]["promoted_by"].startswith("alice (promote")
    assert (
        state["champion"]["data_version"].endswith(".dir") and "test/roc_auc" in state["champion"]["metrics"]
    )


def test_stale_blessing_and_unblessed_versions_need_force(ws):
    promote(ws.mlflow_store, ws.promotion, "3", reviewer="alice", reason="r")
    with pytest.raises(PromotionError, match="blessed against champion 1, but the champion is now 3"):
        promote(ws.mlflow_store, ws.promotion, "2", reviewer="bob", reason="r")
    reg = Registry(ws.mlflow_store, ws.promotion)
    reg.client.set_model_version_tag(reg.name, "2", "gate.status", "rejected")
    with pytest.raises(PromotionError, match="not blessed"):
        promote(ws.mlflow_store, ws.promotion, "2", reviewer="bob", reason="r")
    assert _champion(ws) == "3"
    entry = promote(
        ws.mlflow_store, ws.promotion, "2", reviewer="bob", reason="hotfix, gate known-flaky", force=True
    )
    assert entry.evidence["forced"] is True and _champion(ws) == "2"


def test_rollback_restores_the_previous_or_named_champion(ws):
    promote(ws.mlflow_store, ws.promotion, "3", reviewer="alice", reason="r")
    back = rollback(ws.mlflow_store, ws.promotion, reason="v3 misbehaves on weekends", actor="oncall")
    assert (back.action, back.from_version, back.to_version) == ("rollback", "3", "1")
    assert _champion(ws) == "1" and Registry(ws.mlflow_store, ws.promotion).alias("previous") == "3"
    to = rollback(ws.mlflow_store, ws.promotion, reason="try v2", actor="oncall", to="2")
    assert to.to_version == "2" and _champion(ws) == "2"
    actions = [e.action for e in Registry(ws.mlflow_store, ws.promotion).ledger()]
    assert actions == ["initial", "promote", "rollback", "rollback"]


def test_out_of_band_move_is_detected_and_recorded(ws):
    reg = Registry(ws.mlflow_store, ws.promotion)
    reg.client.set_registered_model_alias(reg.name, "champion", "2")  # as in the MLflow UI
    assert (
        status(ws.mlflow_store, ws.promotion)["out_of_band"] == "champion is v2 but keel's ledger last set v1"
    )
    entry = promote(ws.mlflow_store, ws.promotion, "3", reviewer="alice", reason="r", force=True)
    ledger = Registry(ws.mlflow_store, ws.promotion).ledger()
    oob = [e for e in ledger if e.action == "out-of-band"]
    assert len(oob) == 1 and (oob[0].from_version, oob[0].to_version) == ("1", "2")
    assert oob[0].seq < entry.seq and entry.from_version == "2"


@pytest.mark.parametrize(
    "version,needle",
    [
        ("99", "has no version 99"),
        ("models:/some-other-model/1", "is a version of model 'some-other-model'"),
        ("latest", "is not a model version"),
    ],
)
def test_bad_versions_are_refused_and_aliases_untouched(ws, version, needle):
    before = Registry(ws.mlflow_store, ws.promotion).ledger()
    with pytest.raises(PromotionError, match=needle):
        promote(ws.mlflow_store, ws.promotion, version, reviewer="alice", reason="r")
    assert _champion(ws) == "1" and Registry(ws.mlflow_store, ws.promotion).ledger() == before


def test_unknown_model_and_unreachable_server(ws):
    with pytest.raises(PromotionError, match="registered model 'no-such-model' does not exist"):
        other = ws.with_overrides({"mlflow.model_name": "no-such-model"})
        promote(other.mlflow_store, other.promotion, "1", reviewer="a", reason="r")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    down = ws.with_overrides(
        {"mlflow.tracking_uri": f"http://127.0.0.1:{port}", "mlflow.registry_uri": f"http://127.0.0.1:{port}"}
    )
    with pytest.raises(PromotionError, match=rf"127.0.0.1:{port}.*not reachable"):
        promote(down.mlflow_store, down.promotion, "3", reviewer="a", reason="r")
    with pytest.raises(PromotionError, match="not reachable"):
        rollback(down.mlflow_store, down.promotion, reason="r", actor="a")
    assert _champion(ws) == "1"


def test_a_version_that_cannot_load_is_never_promoted(ws):
    from pathlib import Path

    reg = Registry(ws.mlflow_store, ws.promotion)
    mv = reg.client.get_model_version(reg.name, "3")
    # break this copy's artifacts of v3: point its source at an empty directory
    src = ws.workspace / "broken-model"
    src.mkdir()
    import sqlite3

    db = ws.mlflow.tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        con.execute(
            "UPDATE model_versions SET source=?, storage_location=? WHERE name=? AND version=3",
            (src.as_uri(), src.as_uri(), reg.name),
        )
    with pytest.raises(PromotionError, match="failed the servability check"):
        promote(ws.mlflow_store, ws.promotion, "3", reviewer="alice", reason="r")
    assert _champion(ws) == "1" and len(Registry(ws.mlflow_store, ws.promotion).ledger()) == 1
    assert Path(mv.source) != src


def test_two_concurrent_promotions_do_not_interleave(ws):
    cmd = [sys.executable, "-m", "keel.cli", "-w", str(ws.workspace), "-p", "test", "promote"]
    procs = [
        subprocess.Popen(
            [
                *cmd,
                v,
                "--reviewer",
                f"r{v}",
                "--reason",
                "race",
                "--force",
                *(["--json"] if v == "3" else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in ("2", "3")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ledger = Registry(ws.mlflow_store, ws.promotion).ledger()
    moves = [e for e in ledger if e.action == "promote"]
    assert len(moves) == 2 and [e.seq for e in ledger] == [1, 2, 3]
    # serialised: the second move starts from where the first one ended
    assert moves[0].from_version == "1" and moves[1].from_version == moves[0].to_version
    assert _champion(ws) == moves[1].to_version
    # the --json one printed its ledger entry, by promote.json's schema, and nothing else
    schema = json.loads(resources.files("keel.cli").joinpath("schemas/promote.json").read_text())
    printed = json.loads(outs[1][0])
    jsonschema.validate(printed, schema)
    assert printed["entry"] == dataclasses.asdict(next(e for e in moves if e.to_version == "3"))
    assert "keel-lock-" not in " ".join(
        m.name for m in Registry(ws.mlflow_store, ws.promotion).client.search_registered_models()
    )


def test_reviewer_approves_in_a_paused_prefect_flow_run(ws, matches_schema):
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    from flows.review import review_flow

    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("out", review_flow(ws, "3", 300, 1)))
    runner.start()
    paused = None
    deadline = time.monotonic() + 120
    while paused is None and time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
        paused = next((r for r in runs if r.name and r.flow_id), None)
        time.sleep(0.5)
    assert paused is not None, "the review flow never paused for input"
    assert _champion(ws) == "1"  # nothing moves while it waits
    resume_flow_run(
        paused.id, run_input={"approve": True, "reviewer": "carol", "reason": "looked at the diff card"}
    )
    runner.join(timeout=120)
    outcome = result["out"]
    assert outcome.approved and outcome.reviewer == "carol" and _champion(ws) == "3"
    last = Registry(ws.mlflow_store, ws.promotion).ledger()[-1]
    assert (last.actor, last.reason, last.to_version) == ("carol", "looked at the diff card", "3")
    # what keel review prints (and --json, by its schema): the decision and its ledger entry
    from keel.cli import summary

    said = matches_schema(summary.review(outcome), "review")
    assert said["decision"] == "approved" and said["entry"] == dataclasses.asdict(last)
    assert outcome.line() == "v3 approved by carol: champion -> v3"
