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

from keel.config.settings import Settings

ALIASES = ("champion", "challenger")


def aliases(settings: Settings) -> dict[str, str | None]:
    from keel.registry import tracking

    return {a: tracking.current_alias_version(settings.mlflow_store, a) for a in ALIASES}


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def train(
    settings: Settings,
    registered: Any,
    before: dict[str, str | None],
    flow_run_id: str | None = None,
    log: Path | None = None,
    run: Any = None,
) -> dict[str, Any]:
    """The train object for ``registered`` (tasks.register.RegisteredVersion); ``run``:
    its MLflow run when the caller has it already."""
    from keel.registry import tracking

    c = tracking.client(settings.mlflow_store)
    run = run or c.get_run(registered.run_id)
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
            "rules_from": gate.get("rules_from", ""),
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
    from keel.ops.services import running

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


def _rel(path: str) -> str:
    """``path`` as shown to a person: relative to the current directory when under it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _short(data_version: str | None) -> str:
    return (data_version or "-").removesuffix(".dir")[:10]


def _param(name: str, value: Any) -> str:
    return f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def shown_metrics(settings: Settings, metrics: dict[str, float]) -> list[str]:
    """The workload's headline test metric first, then the gate's other metrics."""
    from keel.model.objectives import KINDS
    from keel.workloads import load_workload

    headline = f"test/{KINDS[load_workload(settings).objective()].headline}"
    names = [headline, *settings.gate.metrics]
    return [n for i, n in enumerate(names) if n in metrics and n not in names[:i]]


def train_text(settings: Settings, s: dict[str, Any]) -> list[str]:
    """The summary as lines, for a person."""
    from keel.model.direction import higher_is_better

    v, champ = s["version"], s["champion_version"]
    before, after = s["aliases"]["before"], s["aliases"]["after"]
    uri = f"models:/{s['model']}/{v}"
    if s["gate"]["passed"]:
        head = f"registered {uri}: blessed by the gate; {s['decision']}"
    else:
        kept = f"the champion is unchanged (v{after['champion']})" if after["champion"] else "no champion yet"
        head = f"registered {uri}: REJECTED by the gate, held; {kept}"
    short = _short(s["data_version"])
    batches = f" ({', '.join(s['data_batches'])})" if s["data_batches"] else ""
    lines = [head, f"  data      {short}{batches}"]
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
    where = f"; rules from {s['gate']['rules_from']}" if s["gate"].get("rules_from") else ""
    lines.append(f"  gate      {s['gate']['status']}: {ok}/{len(rules)} rules passed{where}")
    if not rules:
        lines.append("    FAIL  no gate rules: a gate with none never blesses")
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


def compress(
    settings: Settings,
    registered: Any,
    before: dict[str, str | None],
    source_version: str,
    method: str,
    flow_run_id: str | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """``keel compress``: the train object of the variant (its gate is the parity gate, its
    baseline the source version), with ``source_version``, ``method`` and ``parity`` (the
    run's ``parity/*`` metrics: agreement, size and latency ratios)."""
    from keel.registry import tracking

    run = tracking.client(settings.mlflow_store).get_run(registered.run_id)
    s = train(settings, registered, before, flow_run_id, log, run)
    metrics = run.data.metrics
    parity = {k.removeprefix("parity/"): v for k, v in sorted(metrics.items()) if k.startswith("parity/")}
    return {**s, "command": "compress", "source_version": source_version, "method": method, "parity": parity}


def compress_text(settings: Settings, s: dict[str, Any]) -> list[str]:
    p = s["parity"]
    ratios = [f"size x{p['size_ratio']:.2f}"] if "size_ratio" in p else []
    rows = sorted(int(k.removeprefix("p50_ratio_")) for k in p if k.startswith("p50_ratio_"))
    if rows:
        ratios.append(
            "p50 latency "
            + ", ".join(f"x{p[f'p50_ratio_{n}']:.2f} ({n} row{'s' if n != 1 else ''})" for n in rows)
        )
    agreement = [f"label agreement {p['agreement']:.4f}"] if "agreement" in p else []
    head, *rest = train_text(settings, s)
    return [
        head,
        f"  from      v{s['source_version']} with {s['method']}: " + ", ".join(agreement + ratios),
        *rest,
    ]


def tune(
    settings: Settings,
    out: Any,
    before: dict[str, str | None],
    flow_run_id: str | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """``keel tune``: the study (trial counts by state, this session's trials, the best
    trial's number, objective value and params), its MLflow run, and the best config's
    training as the train object (null with ``--no-train``)."""
    b = out.summary
    return {
        "command": "tune",
        "study": out.study,
        "run_id": out.run_id,
        "objective": b["objective"],
        "trials": b["trials"],
        "this_session": b["this_session"],
        "best": {"trial": b["best_trial"], "value": _finite(b["best_value"]), "params": b["best_params"]},
        "prefect": {"flow_run_id": flow_run_id},
        "train": None
        if out.registered is None
        else train(settings, out.registered, before, flow_run_id, log),
    }


def tune_text(settings: Settings, t: dict[str, Any]) -> list[str]:
    counts = ", ".join(f"{n} {k}" for k, n in t["trials"].items())
    best = t["best"]
    lines = [
        f"study {t['study']}: {counts} (this session: {len(t['this_session'])} trials)",
        f"  best      trial {best['trial']}, {t['objective']} {_fmt(best['value'])}",
        f"  params    {', '.join(_param(k, v) for k, v in best['params'].items())}",
        f"  MLflow    study run {t['run_id']} (trials are its child runs; tune/*.png)",
    ]
    if t["train"] is None:
        return [*lines, "  next      keel train with the params above (--no-train: nothing was trained)"]
    return [*lines, *train_text(settings, t["train"])]


def replay(settings: Settings, report: Any) -> dict[str, Any]:
    """``keel replay``: ``identical`` (metrics and weights), the report's fields
    (keel.registry.lineage.ReplayReport.to_json) and where the report was written."""
    md, js = report.paths(settings.reports.dir)
    return {
        "command": "replay",
        "identical": report.identical,
        **report.to_json(),
        "report": {"markdown": str(md), "json": str(js)},
        "next": None if report.identical else _replay_next(report),
    }


def _replay_next(report: Any) -> str:
    lineage = report.lineage
    if report.weights_equal or report.same_numerics:
        return f"keel lineage {lineage.version}  (and the report: what differs)"
    where = lineage.numerics or "the kind of CPU it was trained on (not recorded before keel tagged it)"
    return f"keel replay {lineage.version} on {where} for a bit-identical rebuild"


def _numerics(n: dict[str, Any]) -> str:
    trained = n["recorded"] or "unrecorded"
    return f"trained on {trained}, rebuilt on " + ("the same" if n["same"] else n["replayed"])


def replay_text(r: dict[str, Any]) -> list[str]:
    deltas = r["metric_deltas"]
    differ = {k: d for k, d in deltas.items() if d != 0.0}
    env = r["environment_diff"]
    if differ:
        name = max(differ, key=lambda k: abs(differ[k]))
        metrics = f"{len(differ)} of {len(deltas)} differ (largest: {name} {differ[name]:+.6f})"
    else:
        metrics = f"all {len(deltas)} identical" if deltas else "none compared"
    weights = (
        f"equal (sha256 {r['replayed_weights_sha256'][:16]})"
        if r["weights_equal"]
        else f"DIFFER: recorded {r['recorded_weights_sha256'][:16]}, "
        f"replayed {r['replayed_weights_sha256'][:16]}"
    )
    code = r.get("model_code") or {}
    said = (
        f"CHANGED since v{r['version']} was built (sha256 {code['recorded_sha256'][:12]} -> "
        f"{code['replayed_sha256'][:12]})"
        if code.get("changed")
        else f"as when v{r['version']} was built (sha256 {code.get('recorded_sha256', '')[:12]})"
    )
    lines = [
        f"replay of {r['model']} v{r['version']}: {'IDENTICAL' if r['identical'] else 'DIFFERS'}",
        f"  data      {_short(r['data_version'])} (re-materialised from the DVC remote)",
        f"  metrics   {metrics}",
        f"  weights   {weights}",
        *([f"  code      {code['target']}: {said}"] if code.get("target") else []),
        f"  cpu       {_numerics(r['numerics'])}",
        f"  packages  {len(env['changed'])} changed, {len(env['added'])} added, "
        f"{len(env['removed'])} removed",
        f"  report    {_rel(r['report']['markdown'])} ({Path(r['report']['json']).name})",
    ]
    return lines + ([f"  next      {r['next']}"] if r["next"] else [])


def simulate(timeline: Path, batches: list[str]) -> dict[str, Any]:
    """``keel simulate``: each batch's record (timeline.json), the champion before the
    first and after the last, and where the timeline was written."""
    records = json.loads(timeline.with_suffix(".json").read_text())
    return {
        "command": "simulate",
        "batches": batches,
        "workspace": str(timeline.parent / "ws"),
        "champion_before": records[0]["champion_before"] if records else None,
        "champion_after": records[-1]["champion_after"] if records else None,
        "promotions": sum(r["champion_after"] != r["champion_before"] for r in records),
        "months": records,
        "timeline": {
            "markdown": str(timeline),
            "png": str(timeline.with_suffix(".png")),
            "json": str(timeline.with_suffix(".json")),
        },
    }


def simulate_text(settings: Settings, s: dict[str, Any]) -> list[str]:
    """One line per batch: the champion, how it did on the unseen batch, drift, the gate's
    verdict on the retrained challenger, and the champion after."""
    from keel.model.objectives import KINDS
    from keel.workloads import load_workload

    metric = KINDS[load_workload(settings).objective()].headline
    v = lambda x: f"v{x}" if x else "-"  # noqa: E731
    lines = [
        f"simulated {len(s['batches'])} batches in {_rel(s['workspace'])}",
        f"  {'batch':<10}{'champion':>9}{'on batch':>10}{'drift':>7}{'guardrail':>12}  "
        f"{'gate':<9}{'after':>6}",
        f"  {'':<10}{'':>9}{metric[:10]:>10}",
    ]
    for r in s["months"]:
        drift = "-" if r["drift_share"] is None else f"{r['drift_share']:.2f}{'*' if r['drifted'] else ''}"
        lines.append(
            f"  {r['month']:<10}{v(r['champion_before']):>9}{_fmt(_finite(r['forward_auc'])):>10}{drift:>7}"
            f"{r['guardrail'] or '-':>12}  {r['gate']:<9}{v(r['champion_after']):>6}"
        )
    lines += [
        f"  champion  {v(s['champion_before'])} -> {v(s['champion_after'])} ({s['promotions']} changes; "
        "* drifted)",
        f"  timeline  {_rel(s['timeline']['markdown'])} (.png, .json)",
    ]
    return lines


def review(outcome: Any) -> dict[str, Any]:
    """``keel review``: the reviewer's decision and, when approved, the ledger entry."""
    import dataclasses

    fields = dataclasses.asdict(outcome)
    flow_run_id = fields.pop("flow_run_id")
    return {"command": "review", **fields, "prefect": {"flow_run_id": flow_run_id}}
