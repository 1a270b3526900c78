"""Explanation tasks: the trained model's global explanation on held-out rows (pure) and
its MLflow artifacts under ``explain/`` (edge). keel.model.explain chooses the method."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import ExplainConfig, MlflowStore
from keel.data.types import Splits
from keel.errors import retry_transient
from keel.model.explain import Explanation


@task(name="explain-model", cache_policy=NONE)
def explain_model(explain: ExplainConfig, label: str, seed: int, model, splits: Splits) -> Explanation:
    """What the model relies on, on (up to ``explain.rows``) test rows (``label``: their label
    column); seeded by ``seed`` (train.seed)."""
    from keel.model.explain import WHY, global_importance, method_for

    method = method_for(model.family, model.net)
    if method is None or not explain.enabled:
        why = (
            "disabled ([explain] enabled = false)"
            if method
            else "one tag per token: no single target per record"
        )
        return Explanation(None, why, 0, pd.DataFrame(columns=["feature", "importance", "spread"]), [], [])
    limit = explain.token_rows if method == "tokens" else explain.rows
    test = splits.test.head(limit)
    table = global_importance(
        model.family,
        model.preprocessor,
        model.net,
        model.objective,
        model.predict,
        test,
        test[label],
        repeats=explain.repeats,
        seed=seed,
        top=explain.top,
    )
    image = list(getattr(getattr(model.net, "cfg", None), "image", []))  # the conv family's pixels
    pixels = list(getattr(model.preprocessor, "numeric", []))
    return Explanation(method, WHY[method], len(test), table, pixels, image)


@task(
    name="log-explanation",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def log_explanation(store: MlflowStore, explanation: Explanation, run_id: str) -> list[str]:
    """``explain/importance.csv``, ``explain/importance.png`` and ``explain/method.json``."""
    from keel.model.explain import plot
    from keel.registry import tracking

    client = tracking.client(store)
    meta = {"method": explanation.method, "why": explanation.why, "rows": explanation.rows}
    client.log_text(run_id, json.dumps(meta, indent=2), "explain/method.json")
    if explanation.method is None:
        return ["explain/method.json"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        explanation.table.to_csv(out / "importance.csv", index=False, float_format="%.6g")
        title = f"{store.mlflow.model_name}: {explanation.method} ({explanation.rows} held-out rows)"
        plot(
            explanation.table,
            explanation.method,
            title,
            out / "importance.png",
            explanation.pixels,
            explanation.image,
        )
        client.log_artifact(run_id, str(out / "importance.csv"), "explain")
        client.log_artifact(run_id, str(out / "importance.png"), "explain")
    return ["explain/method.json", "explain/importance.csv", "explain/importance.png"]


def champion_importance(store: MlflowStore, run_id: str) -> pd.DataFrame | None:
    """The champion's ``explain/importance.csv`` (None: its run logged none, e.g. trained
    before explanations existed)."""
    from keel.registry import tracking

    client = tracking.client(store)
    if "explain/importance.csv" not in {f.path for f in client.list_artifacts(run_id, "explain")}:
        return None
    return pd.read_csv(client.download_artifacts(run_id, "explain/importance.csv"))
