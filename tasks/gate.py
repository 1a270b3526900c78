"""Gate and policy tasks: compare the challenger with the champion on the same
held-out rows, record the verdict, then promote or hold as the policy says."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import FeatureConfig, GateConfig, MlflowStore, PromotionConfig
from keel.data.types import DatasetRef, Holdout, Splits
from keel.errors import retry_transient
from keel.model.evaluation import Evaluation
from keel.model.explain import Explanation
from keel.registry.gate import AWAITING, Baseline, GateResult
from keel.registry.version import RegisteredVersion


@task(
    name="evaluate-champion",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def evaluate_champion(store: MlflowStore, features: FeatureConfig, splits: Splits) -> Baseline | None:
    """The champion (as registered) on the challenger's val and test rows, by its own objective."""

    from keel.model.evaluation import slice_gaps, slice_table
    from keel.registry import tracking

    version = tracking.current_alias_version(store, "champion")
    if version is None:
        return None
    tracking.use_tracking(store)
    model = tracking.load_pyfunc(store, f"models:/{store.mlflow.model_name}/{version}")
    columns = model.metadata.get_input_schema().input_names()
    objective = model.unwrap_python_model().objective  # the champion's own output meaning
    label = features.label
    metrics: dict[str, float] = {}
    slices = None
    for name, frame in (("val", splits.val), ("test", splits.test)):
        out = model.predict(frame[columns])
        metrics.update({f"{name}/{k}": v for k, v in objective.metrics(frame[label], out).items()})
        if name == "test":
            slices = slice_table(frame, frame[label], out, objective, features.slices)
            gaps = slice_gaps(slices, objective.headline, features.slice_min_rows)
            metrics.update({f"test/{k}": v for k, v in gaps.items()})
    client = tracking.client(store)
    mv = client.get_model_version(store.mlflow.model_name, version)
    run = client.get_run(mv.run_id) if mv.run_id else None
    params = dict(run.data.params) if run else {}
    trained_on = tuple(filter(None, (run.data.tags.get("data_partitions", "") if run else "").split(",")))
    return Baseline(
        version, (mv.tags or {}).get("data_version", ""), params, metrics, slices, trained_on, mv.run_id or ""
    )


@task(name="apply-gate", cache_policy=NONE)
def apply_gate(
    rules: GateConfig,
    rules_from: str,
    store: MlflowStore,
    evaluation: Evaluation,
    baseline: Baseline | None,
    holdout: Holdout,
) -> GateResult:
    """Bless or reject on the holdout's rows; refuse if ``champion`` no longer points at the
    baseline used. The verdict records the holdout, and whether the champion trained on it."""
    from keel.errors import PromotionError
    from keel.registry import tracking
    from keel.registry.gate import evaluate_gate, objective_default

    if not rules.metrics:  # no layer brings rules: the objective's default, never no gate at all
        rules, rules_from = objective_default(evaluation.objective, rules)
    result = evaluate_gate(
        rules,
        evaluation.metrics,
        evaluation.slices,
        baseline.version if baseline else None,
        baseline.metrics if baseline else None,
        baseline.slices if baseline else None,
    )
    seen = (
        baseline is not None
        and holdout.scheme == "newest"
        and bool(set(holdout.batches) & set(baseline.partitions))
    )
    result = replace(
        result, holdout={**holdout.to_json(), "champion_trained_on_it": seen}, rules_from=rules_from
    )
    now = tracking.current_alias_version(store, "champion")
    if now != result.baseline_version:
        raise PromotionError(
            f"the champion moved from v{result.baseline_version} to v{now} while the "
            f"gate ran; the verdict would compare against the wrong baseline. Retrain."
        )
    return result


@task(
    name="record-gate",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def record_gate(
    store: MlflowStore,
    slice_metric: str,
    registered: RegisteredVersion,
    dataset: DatasetRef,
    evaluation: Evaluation,
    baseline: Baseline | None,
    gate: GateResult,
    explanation: Explanation | None = None,
) -> str:
    """Verdict as version tags; the diff card (with what the model relies on beside the
    champion's, when ``explanation`` is given) into the run and the Prefect UI."""
    import json

    from prefect.artifacts import create_markdown_artifact

    from keel.registry import tracking
    from keel.registry.gate import diff_card

    client = tracking.client(store)
    name, v = store.mlflow.model_name, registered.version
    params = dict(client.get_run(registered.run_id).data.params)
    card = diff_card(
        name,
        {"version": v, "data_version": dataset.version.md5, "params": params, "metrics": evaluation.metrics},
        None
        if baseline is None
        else {
            "version": baseline.version,
            "data_version": baseline.data_version,
            "params": baseline.params,
            "metrics": baseline.metrics,
        },
        gate,
        evaluation.slices,
        None if baseline is None else baseline.slices,
        slice_metric,
        _relies_on(store, explanation, baseline),
    )
    client.log_text(registered.run_id, card, "gate/diff_card.md")
    record = {**gate.to_json(), "baseline_metrics": None if baseline is None else baseline.metrics}
    client.log_dict(registered.run_id, record, "gate/gate.json")
    # the tags last: a version tagged gate.status has its card (tasks/review.py reads it)
    for key, value in {
        "gate.status": gate.status,
        "gate.baseline": gate.baseline_version or "none",
        "gate.summary": gate.summary()[:4900],
        "gate.holdout": str(gate.holdout.get("scheme", "")),  # "newest": its test/* foretell later batches
    }.items():
        client.set_model_version_tag(name, v, key, value)
    create_markdown_artifact(key="keel-gate", markdown=card, description=f"{name} v{v}: {gate.status}")
    return json.dumps(gate.to_json())


def _relies_on(
    store: MlflowStore, explanation: Explanation | None, baseline: Baseline | None
) -> tuple[str, pd.DataFrame, pd.DataFrame | None] | None:
    """(method, the challenger's importance table, the champion's or None) for the card."""
    from tasks.explain import champion_importance

    if explanation is None or explanation.method is None:
        return None
    theirs = champion_importance(store, baseline.run_id) if baseline and baseline.run_id else None
    return explanation.method, explanation.table, theirs


@task(name="apply-policy", cache_policy=NONE)
def apply_policy(
    store: MlflowStore, promotion: PromotionConfig, registered: RegisteredVersion, gate: GateResult
) -> RegisteredVersion:
    """auto: a blessed challenger becomes champion. review: it waits for a reviewer.
    With no champion yet, a blessed version becomes the first one under either policy."""
    from keel.errors import PromotionError
    from keel.registry import tracking
    from keel.registry.promotion import promote

    client = tracking.client(store)
    name, v = store.mlflow.model_name, registered.version
    if not gate.passed:
        client.set_model_version_tag(name, v, "promotion", "held: gate rejected")
        return replace(registered, decision=f"held: {gate.summary()}")
    first = tracking.current_alias_version(store, "champion") is None
    if first or promotion.policy == "auto":
        try:
            promote(
                store,
                promotion,
                v,
                reviewer="keel (policy auto)",
                reason="first blessed version" if first else "blessed by the gate (policy auto)",
                action="initial" if first else "auto-promote",
            )
        except PromotionError as exc:  # e.g. not servable: the training stands, the champion stays
            client.set_model_version_tag(name, v, "promotion", f"blocked: {exc}"[:4900])
            return replace(registered, decision=f"blocked: {exc}")
        return replace(registered, aliases=[*registered.aliases, "champion"], decision="promoted to champion")
    client.set_model_version_tag(name, v, "promotion", AWAITING)
    return replace(registered, decision="blessed; awaiting review (keel promote / keel review)")
