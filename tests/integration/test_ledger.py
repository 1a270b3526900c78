"""The tamper-evident ledger on a real MLflow sqlite registry: the hash chain, the
anchored copies (artifacts of the ledger run), and `keel history --verify` naming the
first entry that was edited, deleted, reordered or is missing; `keel status` warns."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from keel.registry.promotion import LEDGER_TAG, Registry, verify_ledger

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def ledger(synthetic):
    """A registered model with v1..v3 and three champion moves in its ledger (no training:
    the ledger does not care what the versions hold)."""
    reg = Registry(synthetic.mlflow_store, synthetic.promotion)
    reg.client.create_registered_model(reg.name)
    for _ in range(3):
        reg.client.create_model_version(reg.name, source=str(synthetic.workspace / "no-model"))
    for frm, to in ((None, "1"), ("1", "2"), ("2", "3")):
        reg.move_champion(to, actor="tests", action="promote", reason=f"to v{to}", evidence={"from": frm})
    return reg


def _tag(reg, seq):
    return json.loads(reg.client.get_registered_model(reg.name).tags[f"{LEDGER_TAG}{seq:06d}"])


def _verify_cli(settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "keel.cli",
            "-w",
            str(settings.workspace),
            "-p",
            "test",
            "history",
            "--verify",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_an_intact_ledger_verifies_and_each_entry_chains_to_the_one_before(ledger, synthetic):
    checked = verify_ledger(ledger)
    assert checked.ok and checked.entries == checked.chained == 3, checked.problems
    entries = ledger.ledger()
    assert entries[0].prev == "genesis" and entries[1].prev == entries[0].hash != ""
    copies = ledger.anchored()
    assert sorted(copies) == [1, 2, 3] and json.loads(copies[2]) == _tag(ledger, 2)
    proc = _verify_cli(synthetic)
    assert proc.returncode == 0, proc.stderr
    assert (
        "ledger verified: 3 entries" in proc.stdout
        and "identities: NOT authenticated (embedded store)" in proc.stdout
    )


def test_an_edited_entry_is_named(ledger, synthetic):
    edited = {**_tag(ledger, 2), "reason": "nothing to see here"}
    ledger.client.set_registered_model_tag(ledger.name, f"{LEDGER_TAG}000002", json.dumps(edited))
    checked = verify_ledger(ledger)
    assert checked.problems[0] == "entry #2 was edited: its content no longer matches its hash"
    proc = _verify_cli(synthetic)
    assert proc.returncode == 1 and "entry #2 was edited" in proc.stderr
    # the editor who also fixes the hash breaks the link to the next entry and the anchored copy
    from keel.registry.promotion import LedgerEntry, digest

    forged = LedgerEntry(**edited)
    forged = LedgerEntry(**{**edited, "hash": digest(forged)})
    ledger.client.set_registered_model_tag(ledger.name, f"{LEDGER_TAG}000002", json.dumps(forged.__dict__))
    problems = verify_ledger(ledger).problems
    assert problems[0] == "entry #2 differs from its anchored copy ledger/000002.json (edited)"
    assert "entry #3 does not follow entry #2 (reordered, or #2 replaced)" in problems


@pytest.mark.parametrize(
    ("seq", "copy"), [(2, "its anchored copy remains"), (3, "its anchored copy remains")]
)
def test_a_deleted_entry_is_named_first_or_last(ledger, seq, copy):
    ledger.client.delete_registered_model_tag(ledger.name, f"{LEDGER_TAG}{seq:06d}")
    assert verify_ledger(ledger).problems[0] == f"entry #{seq} is missing (deleted; {copy})"


def test_reordered_entries_are_named(ledger):
    two, three = _tag(ledger, 2), _tag(ledger, 3)
    ledger.client.set_registered_model_tag(ledger.name, f"{LEDGER_TAG}000002", json.dumps(three))
    ledger.client.set_registered_model_tag(ledger.name, f"{LEDGER_TAG}000003", json.dumps(two))
    assert verify_ledger(ledger).problems[0] == "entry #2 holds entry #3's content (reordered or edited)"


def test_a_champion_moved_outside_keel_fails_verification_and_status_warns(ledger, synthetic):
    ledger.client.set_registered_model_alias(ledger.name, "champion", "1")
    assert verify_ledger(ledger).problems == ["the champion alias is v1, but the ledger's last move set v3"]
    # an entry slipped in as a tag alone (no anchored copy) is caught too, and status warns
    ledger.client.set_registered_model_alias(ledger.name, "champion", "3")
    fake = {**_tag(ledger, 3), "seq": 4, "prev": _tag(ledger, 3)["hash"], "reason": "slipped in"}
    from keel.registry.promotion import LedgerEntry, digest, status

    fake["hash"] = digest(LedgerEntry(**fake))
    ledger.client.set_registered_model_tag(ledger.name, f"{LEDGER_TAG}000004", json.dumps(fake))
    assert verify_ledger(ledger).problems == [
        "entry #4 has no anchored copy (ledger/000004.json): inserted outside keel"
    ]
    assert status(synthetic.mlflow_store, synthetic.promotion)["ledger_problem"].startswith(
        "entry #4 has no anchored copy"
    )


def test_entries_written_before_the_chain_are_reported_not_failed(synthetic):
    reg = Registry(synthetic.mlflow_store, synthetic.promotion)
    reg.client.create_registered_model(reg.name)
    reg.client.create_model_version(reg.name, source=str(synthetic.workspace / "no-model"))
    old = dict(seq=1, at="2026-11-01T00:00:00Z", actor="keel (policy auto)", action="initial")
    old.update(alias="champion", from_version=None, to_version="1", reason="first", host="h", evidence={})
    reg.client.set_registered_model_tag(reg.name, f"{LEDGER_TAG}000001", json.dumps(old))
    reg.client.set_registered_model_alias(reg.name, "champion", "1")
    reg.move_champion("1", actor="tests", action="promote", reason="again", evidence={})
    checked = verify_ledger(reg)
    assert checked.ok and (checked.entries, checked.chained) == (2, 1), checked.problems
