"""Reviewers are identities: on a real `mlflow server --app-name basic-auth` on loopback the
actor is the authenticated user; a trainer's credentials register versions but cannot move
`champion`; a listed reviewer's can. And [promotion] enforce: a champion moved outside keel
is moved back, on record, and only the champion the verified ledger attests is served."""

import os
import subprocess
import sys

import pytest

from keel.errors import PromotionError

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _as(monkeypatch, user: str, password: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def test_on_an_authenticated_server_only_a_listed_reviewer_moves_the_champion(
    auth_mlflow_server, tmp_path, monkeypatch
):
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.registry.promotion import Registry, promote, rollback, verify_ledger
    from keel.workloads import init_workspace

    url = auth_mlflow_server.url
    auth_mlflow_server.create_user("trainer", "trainer-password-1")
    auth_mlflow_server.create_user("alice", "alice-password-1")

    toml = '[workload]\nname = "synthetic"\n[promotion]\nreviewers = ["alice"]\n'
    s = load_settings(
        init_workspace(tmp_path / "ws", toml),
        profile="test",
        environ={"KEEL_MLFLOW__TRACKING_URI": url},
    )
    assert s.mlflow.tracking_uri == url

    # the trainer registers a version; its first blessing cannot make it champion
    _as(monkeypatch, "trainer", "trainer-password-1")
    ingest_flow(s, ["b01"])
    v1 = train_flow(s)
    assert v1.version == "1" and "champion" not in v1.aliases
    assert v1.decision.startswith("blocked") and "trainer may not promote v1" in v1.decision
    with pytest.raises(PromotionError, match="authenticated you as 'trainer', not 'alice'"):
        promote(s.mlflow_store, s.promotion, "1", reviewer="alice", reason="claims to be alice")
    with pytest.raises(PromotionError, match=r"trainer may not promote v1.*reviewers = \['alice'\]"):
        promote(s.mlflow_store, s.promotion, "1", reviewer="", reason="a trainer promoting")
    assert Registry(s.mlflow_store, s.promotion).alias("champion") is None

    _as(monkeypatch, "alice", "wrong")
    with pytest.raises(PromotionError, match="rejected the credentials of 'alice'"):
        promote(s.mlflow_store, s.promotion, "1", reviewer="", reason="bad password")

    # alice, authenticated, promotes; the ledger names her and says she was authenticated
    _as(monkeypatch, "alice", "alice-password-1")
    entry = promote(s.mlflow_store, s.promotion, "1", reviewer="", reason="reviewed the diff card")
    assert entry.actor == "alice" and entry.evidence["identity"] == {"user": "alice", "authenticated": True}

    _as(monkeypatch, "trainer", "trainer-password-1")  # nor may the trainer roll back
    with pytest.raises(PromotionError, match="trainer may not roll back"):
        rollback(s.mlflow_store, s.promotion, reason="trainer", actor="")
    assert (
        Registry(s.mlflow_store, s.promotion).alias("champion") == "1"
        and verify_ledger(Registry(s.mlflow_store, s.promotion)).ok
    )

    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(s.workspace), "-p", "test", "history"],
        capture_output=True,
        text=True,
        env={**os.environ, "KEEL_MLFLOW__TRACKING_URI": url},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        f"identities: authenticated by the MLflow server {url}" in proc.stdout and "by alice" in proc.stdout
    )


def test_an_out_of_band_move_is_reverted_under_enforce_and_only_the_attested_champion_serves(ws):
    from keel.registry.promotion import Registry, attested_champion, status, verify_ledger

    reg = Registry(ws.mlflow_store, ws.promotion)
    assert reg.alias("champion") == "1"
    reg.client.set_registered_model_alias(reg.name, "champion", "3")  # the MLflow UI/API, not keel

    # without enforce: reported, the alias stays where it was put, and the ledger attests v1 only
    assert attested_champion(ws.mlflow_store, ws.promotion) == ("1", "") and reg.alias("champion") == "3"
    assert (
        status(ws.mlflow_store, ws.promotion)["out_of_band"] == "champion is v3 but keel's ledger last set v1"
    )

    enforced = ws.with_overrides({"promotion.enforce": True})
    state = status(enforced.mlflow_store, enforced.promotion)
    assert "moved back to v1" in state["enforced"] and state["out_of_band"] is None
    assert reg.alias("champion") == "1"
    last_two = reg.ledger()[-2:]
    assert [(e.action, e.from_version, e.to_version) for e in last_two] == [
        ("out-of-band", "1", "3"),
        ("enforce-revert", "3", "1"),
    ]
    assert verify_ledger(reg).ok and attested_champion(enforced.mlflow_store, enforced.promotion) == ("1", "")

    # keel serve under enforce starts on the attested champion, not on an alias moved again
    reg.client.set_registered_model_alias(reg.name, "champion", "2")
    assert (
        attested_champion(enforced.mlflow_store, enforced.promotion) == ("1", "")
        and reg.alias("champion") == "1"
    )
