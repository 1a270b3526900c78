"""What a training command tells a person at the end ("what happened"), and the same as
the ``--json`` object. Built after the flow from what it recorded (the MLflow run, its
gate record, the aliases before and after), so no flow knows about consoles. Renders
text; never prints.

The train object (``keel train --json``; retrain and monitor nest it under ``"train"``):

- ``model``, ``version`` (null when nothing was registered), ``run_id``, ``data_version``
- ``metrics``: the run's ``test/*`` metrics; ``champion_metrics``: the champion's on the
  same held-out rows (null with no champion), ``champion_version``
- ``gate``: ``passed``, ``status`` and ``rules`` (each ``rule``, ``passed``, ``value``,
  ``limit``, ``baseline``)
- ``decision`` (what the promotion policy did), ``aliases``: ``before`` and ``after``
  (``champion``, ``challenger``: a version or null)
- ``mlflow``: ``tracking_uri``, ``experiment_id``, ``run_url`` (null without a server);
  ``prefect``: ``flow_run_id``; ``log``: the command's log file; ``next``: a command.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from keel.settings import Settings

ALIASES = ("champion", "challenger")


def aliases(settings: Settings) -> dict[str, str | None]:
    from keel import tracking

    return {a: tracking.current_alias_version(settings, a) for a in ALIASES}


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def train(
    settings: Settings,
    registered: Any,
    before: dict[str, str | None],
    flow_run_id: str | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """The train object for ``registered`` (tasks.register.RegisteredVersion)."""
    from keel import tracking

    c = tracking.client(settings)
    run = c.get_run(registered.run_id)
    gate = json.loads(Path(c.download_artifacts(registered.run_id, "gate/gate.json")).read_text())
    metrics = {k: v for k, v in sorted(run.data.metrics.items()) if k.startswith("test/")}
    base = gate.get("baseline_metrics")
    after = aliases(settings)
    passed = gate["status"] == "blessed"
    return {
        "command": "train",
        "model": registered.name,
        "version": registered.version,
        "run_id": registered.run_id,
        "data_version": run.data.tags.get("data_version"),
        "data_batches": [b for b in run.data.tags.get("data_partitions", "").split(",") if b],
        "metrics": metrics,
        "champion_version": gate.get("baseline_version"),
        "champion_metrics": None if base is None else {k: _finite(v) for k, v in sorted(base.items())},
        "gate": {
            "passed": passed,
            "status": gate["status"],
            "rules": [
                {
                    "rule": check["name"],
                    "passed": bool(check["passed"]),
                    "value": _finite(check["value"]),
                    "limit": _finite(check["limit"]),
                    "baseline": _finite(check.get("baseline")),
                }
                for check in gate["checks"]
            ],
        },
        "decision": registered.decision,
        "aliases": {"before": before, "after": after},
        "mlflow": {
            "tracking_uri": settings.mlflow.tracking_uri,
            "experiment_id": run.info.experiment_id,
            "run_url": run_url(settings, run.info.experiment_id, registered.run_id),
        },
        "prefect": {"flow_run_id": flow_run_id},
        "log": str(log) if log else None,
        "next": next_command(settings, registered, passed, after),
    }


def run_url(settings: Settings, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, when a tracking server serves this workspace."""
    from keel.services import running

    base = settings.mlflow.tracking_uri if settings.mlflow.tracking_uri.startswith("http") else None
    if base is None:
        up = running(settings)
        base = next((s.url for s in up.services if s.name == "mlflow-server"), None) if up else None
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def next_command(settings: Settings, registered: Any, passed: bool, after: dict[str, str | None]) -> str:
    v = registered.version
    if not passed:
        return f"keel lineage {v}  (what v{v} was trained on; its diff card: gate/diff_card.md in its run)"
    if after.get("champion") == v:
        return "keel serve  (serve the new champion; keel rollback --reason ... undoes it)"
    if registered.decision.startswith("blocked"):
        return f"keel promote {v} --reviewer NAME --reason ...  (after fixing what blocked it)"
    return f"keel promote {v} --reviewer NAME --reason ...  (or keel review {v})"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def shown_metrics(settings: Settings, metrics: dict[str, float]) -> list[str]:
    """The workload's headline test metric first, then the gate's other metrics."""
    from keel.objectives import KINDS
    from keel.workload import load_workload

    headline = f"test/{KINDS[load_workload(settings).objective()].headline}"
    names = [headline, *settings.gate.metrics]
    return [n for i, n in enumerate(names) if n in metrics and n not in names[:i]]


def train_text(settings: Settings, s: dict[str, Any]) -> list[str]:
    """The summary as lines, for a person."""
    from keel.objectives import higher_is_better

    v, champ = s["version"], s["champion_version"]
    before, after = s["aliases"]["before"], s["aliases"]["after"]
    uri = f"models:/{s['model']}/{v}"
    if s["gate"]["passed"]:
        head = f"registered {uri}: blessed by the gate; {s['decision']}"
    else:
        kept = f"the champion is unchanged (v{after['champion']})" if after["champion"] else "no champion yet"
        head = f"registered {uri}: REJECTED by the gate, held; {kept}"
    short = (s["data_version"] or "-").removesuffix(".dir")[:10]
    lines = [head, f"  data      {short} ({', '.join(s['data_batches'])})"]
    names = shown_metrics(settings, s["metrics"])
    base = s["champion_metrics"] or {}
    lines.append(f"  {'metric':<22}{'v' + v:>10}{('v' + champ) if champ else 'champion':>12}{'delta':>10}")
    for n in names:
        mine, theirs = _finite(s["metrics"].get(n)), base.get(n)
        delta = None if mine is None or theirs is None else mine - theirs
        verdict = "" if not delta else ("better" if (delta > 0) == higher_is_better(n) else "worse")
        shown = "" if delta is None else f"{delta:+.4f}"
        lines.append(f"  {n:<22}{_fmt(mine):>10}{_fmt(theirs):>12}{shown:>10} {verdict}".rstrip())
    rules = s["gate"]["rules"]
    ok = sum(r["passed"] for r in rules)
    lines.append(f"  gate      {s['gate']['status']}: {ok}/{len(rules)} rules passed")
    for r in rules:
        lines.append(f"    {'ok' if r['passed'] else 'FAIL':<5} {r['rule']}  (got {_fmt(r['value'])})")
    moves = [
        f"{a} v{before[a] or '-'} -> v{after[a] or '-'}" for a in ALIASES if before.get(a) != after.get(a)
    ]
    lines.append(f"  aliases   {'; '.join(moves) if moves else 'unchanged'}")
    where = s["mlflow"]["run_url"] or f"{s['run_id']} ({s['mlflow']['tracking_uri']})"
    lines.append(f"  MLflow    run {where}")
    if s["prefect"]["flow_run_id"]:
        lines.append(f"  Prefect   flow run {s['prefect']['flow_run_id']}")
    lines.append(f"  next      {s['next']}")
    return lines
