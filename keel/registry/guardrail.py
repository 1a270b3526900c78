"""The post-promotion guardrail: the champion scored on a labelled batch that just arrived
(rows no version trained on), judged by ``[guardrail]`` rules in the gate's format. When a
rule breaks under policy ``auto``, the newest champion the verified ledger attests that
holds on the same batch is restored (servability check first) and the move is recorded as
``guardrail-rollback`` with the scores as evidence (a fallback must hold and score no worse
than the champion on the batch); under ``review``, or when no earlier champion does, nothing
moves and the outcome asks for a reviewer.

Scores are always logged: one run per model in ``<experiment>-guardrail``, a metric per
check (``guardrail/<metric>``, step = the check's number), the outcome as
``guardrail/<NNNNNN>.json`` and the history as ``guardrail/history.png``.

Never trains, never writes data, never moves an alias except through keel.registry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from keel.config.settings import GuardrailConfig, MlflowStore, PromotionConfig
from keel.errors import KeelError
from keel.registry.gate import Check

GUARDRAIL_RUN_TAG = "keel.guardrail_of"
ACTOR = "keel (guardrail)"


class GuardrailBreach(KeelError, RuntimeError):
    """The champion broke a guardrail rule and keel did not (or could not) roll it back:
    a reviewer decides. Exit code 1."""


@dataclass(frozen=True)
class Score:
    """One version on the batch: ``test/<metric>`` values and the rules' checks."""

    version: str
    metrics: dict[str, float]
    checks: list[Check]
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "passed": self.passed,
            "metrics": self.metrics,
            "checks": [asdict(c) for c in self.checks],
        }

    def failures(self) -> str:
        return "; ".join(f"{c.name} (got {c.value:.4f})" for c in self.checks if not c.passed)


@dataclass(frozen=True)
class GuardOutcome:
    """``status``: no-champion | unjudged (no rules, too few rows, no labels) | held (every
    rule holds) | rolled-back | review (a rule broke and the champion stays)."""

    batches: list[str]
    rows: int
    champion: str | None  # before
    status: str
    champion_after: str | None
    detail: str
    scores: list[Score] = field(default_factory=list)  # the champion first, then each fallback tried

    @property
    def breached(self) -> bool:
        return self.status in ("rolled-back", "review")

    def line(self) -> str:
        return f"guardrail: {self.status} ({self.detail})"

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "rows": self.rows,
            "champion": self.champion,
            "status": self.status,
            "champion_after": self.champion_after,
            "detail": self.detail,
            "scores": [s.to_json() for s in self.scores],
        }

    def markdown(self) -> str:
        lines = [
            f"# Guardrail on {', '.join(self.batches)} ({self.rows} rows): **{self.status}**",
            "",
            self.detail,
            "",
            "| version | check | value | limit | holds |",
            "|---|---|---|---|---|",
        ]
        for s in self.scores:
            for c in s.checks:
                holds = "yes" if c.passed else "**no**"
                lines.append(f"| v{s.version} | {c.name} | {c.value:.4f} | {c.limit:g} | {holds} |")
        return "\n".join(lines) + "\n"


def score_version(store: MlflowStore, label: str, version: str, frame: pd.DataFrame) -> dict[str, float]:
    """``test/<metric>`` of a registered version on labelled rows, by its own objective."""

    from keel.registry import tracking

    tracking.use_tracking(store)
    model = tracking.load_pyfunc(store, f"models:/{store.mlflow.model_name}/{version}")
    out = model.predict(frame[model.metadata.get_input_schema().input_names()])
    objective = model.unwrap_python_model().objective
    scores = objective.metrics(frame[label], out)
    return {f"test/{k}": float(v) for k, v in scores.items()}


def recorded_metrics(store: MlflowStore, version: str) -> dict[str, float]:
    """What the version showed at its own gate (its run's ``test/*``), when that gate was
    forward (a holdout newer than its data): a random split's figure overstates what a
    later batch shows, so against it only the floors (min / max) apply."""
    from keel.registry import tracking

    client = tracking.client(store)
    mv = client.get_model_version(store.mlflow.model_name, version)
    if (mv.tags or {}).get("gate.holdout") != "newest":
        return {}
    metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
    return {k: float(v) for k, v in metrics.items() if k.startswith("test/")}


def judge(store: MlflowStore, rules: GuardrailConfig, version: str, metrics: dict[str, float]) -> Score:
    from keel.config.settings import GateConfig
    from keel.registry.gate import evaluate_gate

    gate = GateConfig(metrics=rules.metrics, slice_metric="", slice_min_rows=0, slice_max_drop=0)
    result = evaluate_gate(
        gate,
        metrics,
        pd.DataFrame(),
        version,
        recorded_metrics(store, version),
        None,
        against="its gate",
    )
    return Score(version, metrics, result.checks, result.passed)


def no_worse(rules: GuardrailConfig, candidate: Score, champion: Score) -> bool:
    """A fallback must also do at least as well as the champion on this batch, on every
    metric a rule names: restoring a model that holds only because it promised less helps no one."""
    from keel.model.direction import higher_is_better

    for key in rules.metrics:
        a, b = candidate.metrics.get(key), champion.metrics.get(key)
        if a is None or b is None:
            continue
        if (a < b) if higher_is_better(key.removeprefix("test/")) else (a > b):
            return False
    return True


def attested_champions(store: MlflowStore, promotion: PromotionConfig) -> tuple[list[str], str]:
    """(earlier champions the ledger attests, newest first; the ledger's first problem or "").
    Out-of-band moves attest nothing."""
    from keel.registry.promotion import Registry, verify_ledger

    reg = Registry(store, promotion)
    checked = verify_ledger(reg)
    if not checked.ok:
        return [], checked.problems[0]
    seen: list[str] = []
    for entry in reversed(reg.ledger()):
        attests = entry.alias == "champion" and entry.action != "out-of-band" and entry.to_version
        if attests and entry.to_version not in seen:
            seen.append(str(entry.to_version))
    return seen, ""


def guard(
    store: MlflowStore,
    promotion: PromotionConfig,
    rules: GuardrailConfig,
    label: str,
    frames: dict[str, pd.DataFrame],
) -> GuardOutcome:
    """Score the champion on the batches (``label``: their label column); judge it by ``rules``;
    under policy ``auto`` roll back on a breach (a move ``promotion`` governs)."""
    from keel.registry import tracking

    names = sorted(frames)
    champion = tracking.current_alias_version(store, "champion")
    frame = pd.concat([frames[n] for n in names], ignore_index=True) if names else pd.DataFrame()
    if champion is None:
        return GuardOutcome(names, len(frame), None, "no-champion", None, "no champion to guard yet")
    if label not in frame.columns or frame[label].isna().all():
        return GuardOutcome(names, len(frame), champion, "unjudged", champion, f"no labels ({label!r})")
    first = judge(store, rules, champion, score_version(store, label, champion, frame))
    if not rules.metrics:
        return GuardOutcome(
            names, len(frame), champion, "unjudged", champion, "no [guardrail] rules", [first]
        )
    if len(frame) < rules.min_rows:
        why = f"{len(frame)} rows < guardrail.min_rows = {rules.min_rows}"
        return GuardOutcome(names, len(frame), champion, "unjudged", champion, why, [first])
    if first.passed:
        detail = f"v{champion} holds on every rule ({len(first.checks)} checks)"
        return GuardOutcome(names, len(frame), champion, "held", champion, detail, [first])
    broke = f"v{champion} broke {first.failures()}"
    if rules.policy == "review":
        return GuardOutcome(
            names,
            len(frame),
            champion,
            "review",
            champion,
            f"{broke}; policy review: a reviewer decides",
            [first],
        )
    return _fall_back(store, promotion, rules, label, names, frame, champion, first, broke)


def _fall_back(
    store: MlflowStore,
    promotion: PromotionConfig,
    rules: GuardrailConfig,
    label: str,
    names: list[str],
    frame: pd.DataFrame,
    champion: str,
    first: Score,
    broke: str,
) -> GuardOutcome:
    from keel.registry.promotion import rollback

    candidates, problem = attested_champions(store, promotion)
    if problem:
        detail = f"{broke}; the ledger does not verify ({problem}), so nothing is restored automatically"
        return GuardOutcome(names, len(frame), champion, "review", champion, detail, [first])
    scores = [first]
    for version in (v for v in candidates if v != champion):
        score = judge(store, rules, version, score_version(store, label, version, frame))
        scores.append(score)
        if not (score.passed and no_worse(rules, score, first)):
            continue
        reason = f"guardrail on {', '.join(names)}: {broke}; v{version} holds there"
        evidence = {"batches": names, "rows": len(frame), "scores": [s.to_json() for s in scores]}
        rollback(
            store,
            promotion,
            reason=reason,
            actor=ACTOR,
            to=version,
            action="guardrail-rollback",
            evidence=evidence,
            expect=champion,
        )
        return GuardOutcome(names, len(frame), champion, "rolled-back", version, reason, scores)
    tried = ", ".join(f"v{s.version}" for s in scores[1:]) or "none"
    detail = f"{broke}; no earlier attested champion holds and does as well on this batch (tried: {tried})"
    return GuardOutcome(names, len(frame), champion, "review", champion, detail, scores)


def log(store: MlflowStore, rules: GuardrailConfig, outcome: GuardOutcome) -> str | None:
    """The outcome into the model's guardrail run: metrics with a step per check, the
    outcome's JSON and the history plot. None when there was nothing scored."""
    import time

    from mlflow.entities import Metric

    from keel.registry import tracking

    if not outcome.scores:
        return None
    client = tracking.client(store)
    model = store.mlflow.model_name
    run_id = tracking.tagged_run(store, "-guardrail", GUARDRAIL_RUN_TAG, model, f"guardrail of {model}")
    assert run_id is not None
    step = len(client.get_metric_history(run_id, "guardrail/rows"))
    now = int(time.time() * 1000)
    champion = outcome.scores[0]
    values = {f"guardrail/{k.removeprefix('test/')}": v for k, v in champion.metrics.items()}
    values.update({"guardrail/rows": float(outcome.rows), "guardrail/holds": float(champion.passed)})
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in sorted(values.items())])
    client.log_text(run_id, json.dumps(outcome.to_json(), indent=1), f"guardrail/{step + 1:06d}.json")
    import matplotlib.pyplot as plt

    figure = _history_plot(rules, client, run_id)
    client.log_figure(run_id, figure, "guardrail/history.png")
    plt.close(figure)
    return run_id


def _history_plot(rules: GuardrailConfig, client, run_id: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    for key, rule in rules.metrics.items():
        history = sorted(
            client.get_metric_history(run_id, f"guardrail/{key.removeprefix('test/')}"), key=lambda m: m.step
        )
        ax.plot([m.step + 1 for m in history], [m.value for m in history], "o-", label=key)
        for limit in (rule.min, rule.max):
            if limit is not None:
                ax.axhline(limit, color="tab:red", lw=0.8, ls="--")
    ax.set_xlabel("guardrail check (labelled batch)")
    ax.set_ylabel("champion's score")
    if rules.metrics:  # no rules, no lines: a legend of nothing only warns
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
