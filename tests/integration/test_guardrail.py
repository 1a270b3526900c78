"""The post-promotion guardrail on a real month: a bad champion (v2) is judged on 2013-03
before anything else; under policy review keel holds and exits 1, under auto it rolls back
to the newest attested champion that holds on the same month (v1), records why in the
ledger, and `keel serve` swaps to it."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RULE = {"test/roc_auc": {"min": 0.55}}  # v1 scores ~0.60 on 2013-03, the untrained v2 ~0.48


def _version(url: str) -> str:
    with urllib.request.urlopen(url + "/version", timeout=10) as r:
        return str(json.loads(r.read())["model_version"])


def _cli(s, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "-w", str(s.workspace), "-p", "test", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def test_a_breach_on_a_real_month_is_held_for_review_or_rolled_back_and_served(workspace, free_tcp_port):
    from flows.guard import guard_flow
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.registry.promotion import Registry, verify_ledger
    from keel.registry.tracking import client

    s = workspace
    ingest_flow(s, ["2013-01"])
    v1 = train_flow(s.with_overrides({"train.max_epochs": 3, "train.limit_train_batches": 1.0}))
    ingest_flow(s, ["2013-02"])
    v2 = train_flow(s.with_overrides({"train.lr": 1e-7}))  # a model that learnt nothing, promoted
    assert (v1.version, v2.version) == ("1", "2") and "champion" in v2.aliases

    port = free_tcp_port
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keel.cli",
            "-w",
            str(s.workspace),
            "-p",
            "test",
            "serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                assert _version(url) == "2"
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)

        # policy review: scored, held, exit 1 naming the batch and the rule; nothing moves
        review = _cli(
            s,
            "guard",
            "--month",
            "2013-03",
            env={"KEEL_GUARDRAIL__POLICY": "review", "KEEL_GUARDRAIL__METRICS": json.dumps(RULE)},
        )
        assert review.returncode == 1, review.stdout + review.stderr
        assert "guardrail breached on 2013-03" in review.stderr and "test/roc_auc >= 0.55" in review.stderr
        assert Registry(s.mlflow_store, s.promotion).alias("champion") == "2"

        # policy auto: v2 breaks the rule, v1 (attested by the ledger) holds: rolled back
        ledger_before = len(Registry(s.mlflow_store, s.promotion).ledger())
        out = guard_flow(s.with_overrides({"guardrail.metrics": RULE}), ["2013-03"])
        assert out.status == "rolled-back" and (out.champion, out.champion_after) == ("2", "1")
        assert [(sc.version, sc.passed) for sc in out.scores] == [("2", False), ("1", True)]
        assert out.scores[0].metrics["test/roc_auc"] < 0.55 <= out.scores[1].metrics["test/roc_auc"]
        reg = Registry(s.mlflow_store, s.promotion)
        entry = reg.ledger()[-1]
        assert len(reg.ledger()) == ledger_before + 1
        assert (entry.action, entry.actor, entry.from_version, entry.to_version) == (
            "guardrail-rollback",
            "keel (guardrail)",
            "2",
            "1",
        )
        assert entry.evidence["batches"] == ["2013-03"] and entry.evidence["servability"]["ok"]
        assert [e["version"] for e in entry.evidence["scores"]] == ["2", "1"]
        assert verify_ledger(reg).ok and reg.alias("champion") == "1"

        deadline = time.monotonic() + 60  # the server follows @champion
        while _version(url) != "1":
            assert time.monotonic() < deadline, "keel serve did not swap to the restored champion"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)

    # the scores are logged every time, as a history, with a plot; the month was not ingested
    c = client(s.mlflow_store)
    exp = c.get_experiment_by_name(f"{s.mlflow.experiment}-guardrail")
    (run,) = c.search_runs([exp.experiment_id])
    history = c.get_metric_history(run.info.run_id, "guardrail/roc_auc")
    # ingest of 2013-02 (v1 held; 2013-01 had no champion to score), the review run, the auto run
    assert len(history) == 3
    assert history[-1].value == pytest.approx(out.scores[0].metrics["test/roc_auc"])
    names = {f.path for f in c.list_artifacts(run.info.run_id, "guardrail")}
    assert "guardrail/history.png" in names
    assert not (s.data.dir / "2013-03.parquet").exists()
    assert Path(c.download_artifacts(run.info.run_id, "guardrail/history.png")).stat().st_size > 0
