"""Explanations: what a trained model relies on, over the held-out rows (global) and for
the records sent to ``POST /explain`` (per record).

The method is the one the network's family declares (keel.model.families), so each
workload gets the one that fits its inputs, never by a workload's name:

- ``ablation`` (the table MLP): global = scikit-learn's permutation importance of the
  headline metric on held-out rows: model-agnostic, in the metric's own units (how much
  the metric falls when a column's values are shuffled), interactions included. Per record =
  captum's FeatureAblation: each raw column's contribution to the raw output (logit, or
  value) against its reference (category "unknown", numeric = its training mean).
- ``saliency`` (the conv net over pixels): captum's Saliency, |d output / d pixel|, per
  pixel; global = its mean over held-out rows, drawn as the image. Permuting 64 correlated
  pixels one at a time says little; the gradient map shows the strokes the net reads.
- ``tokens`` (a BERT text model): captum's LayerIntegratedGradients over the embedding
  layer against a baseline of [PAD] tokens (specials kept): per token; global = the mean
  attribution of each token across held-out rows.

- ``permutation`` (a team's family that declares no method of its own): the global
  explanation of ``ablation``, model-agnostic through the model's predictions on raw rows,
  honestly named so in ``explain/method.json``; no per-record explanation.

A model whose output is one tag per token (token classification) has no single target
per record: ``method_for`` returns None and nothing is computed (said so in the run).

Pure: no files, no MLflow, no server; torch, captum and scikit-learn are imported when a
function runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch

    from keel.model.objectives import Objective

METHODS = ("ablation", "saliency", "tokens", "permutation")
WHY = {
    "permutation": "model-agnostic: permutation importance of the headline metric over the raw "
    "feature columns (the network's family declares no method of its own); no per-record "
    "explanation",
    "ablation": "table MLP: permutation importance of the headline metric (global), "
    "feature ablation against each column's reference (per record)",
    "saliency": "conv net over pixels: gradient saliency per pixel",
    "tokens": "BERT text model: integrated gradients over the token embeddings",
}


@dataclass(frozen=True)
class Explanation:
    method: str | None  # None: nothing to explain per record (one tag per token)
    why: str
    rows: int  # held-out rows read
    table: pd.DataFrame  # feature, importance, spread (+ count), most important first
    pixels: list[str]  # saliency: the numeric columns in image order
    image: list[int]  # saliency: [C, H, W]


def method_for(family: Any, net: Any) -> str | None:
    """The explanation method ``net``'s family declares (keel.model.families)."""
    return family.explanation(net)


def _targets(objective: Objective, raw: torch.Tensor) -> tuple[Any, list[str]]:
    """(captum target, what each record's attributions explain). One output (binary,
    regression): the raw output itself; several (multiclass): the predicted class's logit."""
    if raw.dim() == 1:
        what = "prediction" if objective.kind == "regression" else f"logit of {objective.label}"
        return None, [what] * len(raw)
    index = raw.argmax(dim=1)
    return index, [f"logit of {objective.label}={objective.classes[int(i)]}" for i in index]


def attribute(
    family: Any, preprocessor: Any, net: Any, objective: Objective, frame: pd.DataFrame
) -> list[dict[str, Any]]:
    """Per record: ``{"explains": <what>, "attributions": {feature: score}}`` (ablation,
    saliency) or ``{"explains", "tokens": [...], "attributions": [...]}`` (tokens)."""
    method = method_for(family, net)
    per_record = {"ablation": _ablation, "saliency": _saliency, "tokens": _tokens}
    if method not in per_record:
        why = "one tag per token" if method is None else WHY[method]
        raise ValueError(f"no per-record explanation for this model ({why})")
    return per_record[method](preprocessor, net, objective, frame)


def _ablation(preprocessor: Any, net: Any, objective: Objective, frame: pd.DataFrame) -> list[dict[str, Any]]:
    import torch
    from captum.attr import FeatureAblation

    cat, num = (torch.from_numpy(a) for a in preprocessor.transform(frame))
    n_cat, n_num = cat.shape[1], len(preprocessor.numeric)
    # one feature per raw column: a categorical's code; a numeric's value and missing flag
    cat_mask = torch.arange(n_cat).expand_as(cat).contiguous()
    num_ids = torch.arange(n_cat, n_cat + n_num)
    num_mask = torch.cat([num_ids, num_ids]).expand_as(num).contiguous()
    net.eval()
    with torch.no_grad():
        raw = net(cat, num)
    target, what = _targets(objective, raw)
    # inputs are (num, cat): captum perturbs floats; the codes ablate to 0, "unknown"
    attr = FeatureAblation(lambda n, c: net(c, n)).attribute(
        (num.float(), cat),
        baselines=(0.0, 0),
        target=target,
        feature_mask=(num_mask, cat_mask),
    )
    per_num, per_cat = attr[0].detach(), attr[1].detach()
    names = preprocessor.columns  # categorical, then numeric
    out = []
    for i in range(len(frame)):
        scores = [float(per_cat[i, j]) for j in range(n_cat)] + [float(per_num[i, j]) for j in range(n_num)]
        out.append({"explains": what[i], "attributions": dict(zip(names, scores, strict=True))})
    return out


def _saliency(preprocessor: Any, net: Any, objective: Objective, frame: pd.DataFrame) -> list[dict[str, Any]]:
    scores, what = saliency_matrix(preprocessor, net, objective, frame)
    names = list(preprocessor.numeric)
    return [
        {"explains": what[i], "attributions": dict(zip(names, map(float, scores[i]), strict=True))}
        for i in range(len(frame))
    ]


def saliency_matrix(
    preprocessor: Any, net: Any, objective: Objective, frame: pd.DataFrame
) -> tuple[np.ndarray, list[str]]:
    """(|d output / d pixel value| per row and numeric column, what each row explains)."""
    import torch
    from captum.attr import Saliency

    cat, num = (torch.from_numpy(a) for a in preprocessor.transform(frame))
    net.eval()
    with torch.no_grad():
        raw = net(cat, num)
    target, what = _targets(objective, raw)
    grads = Saliency(lambda n, c: net(c, n)).attribute(
        num.float().requires_grad_(), target=target, additional_forward_args=(cat,), abs=True
    )
    return grads.detach()[:, : len(preprocessor.numeric)].numpy(), what


def _tokens(preprocessor: Any, net: Any, objective: Objective, frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows, what = token_attributions(preprocessor, net, objective, frame)
    return [
        {"explains": what[i], "tokens": [t for t, _ in row], "attributions": [s for _, s in row]}
        for i, row in enumerate(rows)
    ]


def token_attributions(
    preprocessor: Any, net: Any, objective: Objective, frame: pd.DataFrame, steps: int = 16
) -> tuple[list[list[tuple[str, float]]], list[str]]:
    """Per row: (token, attribution) for each token under the attention mask, each row's
    attributions scaled to unit L2 norm; and what each row explains."""
    import torch
    from captum.attr import LayerIntegratedGradients

    ids_np, mask_np = preprocessor.transform(frame)
    ids, mask = torch.from_numpy(ids_np), torch.from_numpy(mask_np)
    tok = preprocessor._tokenizer
    specials = {tok.token_to_id(t) for t in ("[CLS]", "[SEP]")} - {None}
    pad = tok.token_to_id("[PAD]") or 0
    keep = torch.tensor([[int(t) in specials for t in row] for row in ids_np], dtype=torch.bool)
    baseline = torch.where(keep | (mask == 0), ids, torch.full_like(ids, pad))
    net.eval()
    with torch.no_grad():
        raw = net(ids, mask)
    target, what = _targets(objective, raw)
    lig = LayerIntegratedGradients(lambda i, m: net(i, m), net.bert.embeddings)
    attr = lig.attribute(
        ids, baselines=baseline, additional_forward_args=(mask,), target=target, n_steps=steps
    )
    scores = attr.sum(dim=-1).detach()
    scores = scores / scores.norm(dim=1, keepdim=True).clamp(min=1e-12)
    rows = []
    for i in range(len(frame)):
        n = int(mask[i].sum())
        rows.append([(tok.id_to_token(int(ids[i, j])), float(scores[i, j])) for j in range(n)])
    return rows, what


def global_importance(
    family: Any,
    preprocessor: Any,
    net: Any,
    objective: Objective,
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    frame: pd.DataFrame,
    y: pd.Series,
    *,
    repeats: int,
    seed: int,
    top: int,
) -> pd.DataFrame:
    """The held-out rows' explanation: ``feature, importance, spread`` (+ ``count`` for
    tokens), most important first. ``importance``: ablation = the headline metric's mean
    fall when the column is shuffled (``spread`` its std over ``repeats``), saliency = mean
    |gradient| (std across rows), tokens = mean attribution of the token (std across its
    occurrences; only tokens seen at least twice, the ``top`` by |mean|)."""
    method = method_for(family, net)
    if method in ("ablation", "permutation"):  # permutation: model-agnostic, through predict
        return _permutation(objective, predict, frame[preprocessor.columns], y, repeats, seed)
    if method == "saliency":
        scores, _ = saliency_matrix(preprocessor, net, objective, frame)
        return _ranked(preprocessor.numeric, scores.mean(axis=0), scores.std(axis=0))
    if method == "tokens":
        rows, _ = token_attributions(preprocessor, net, objective, frame)
        seen: dict[str, list[float]] = {}
        for row in rows:
            for token, score in row:
                if not (token.startswith("[") and token.endswith("]")):
                    seen.setdefault(token, []).append(score)
        kept = {t: s for t, s in seen.items() if len(s) >= 2}
        return _ranked(
            list(kept),
            [float(np.mean(s)) for s in kept.values()],
            [float(np.std(s)) for s in kept.values()],
            by_magnitude=True,
            count=[len(s) for s in kept.values()],
        ).head(top)
    raise ValueError("this model predicts one tag per token: no explanation")


def _permutation(
    objective: Objective,
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    frame: pd.DataFrame,
    y: pd.Series,
    repeats: int,
    seed: int,
) -> pd.DataFrame:
    from sklearn.inspection import permutation_importance

    from keel.model.direction import higher_is_better

    metric = objective.headline
    sign = 1.0 if higher_is_better(metric) else -1.0

    def score(_estimator: Any, x: pd.DataFrame, y_true: pd.Series) -> float:
        return (
            sign * objective.metrics(y_true.reset_index(drop=True), predict(x.reset_index(drop=True)))[metric]
        )

    result = permutation_importance(
        _Fitted(),
        frame.reset_index(drop=True),
        y.reset_index(drop=True),
        scoring=score,
        n_repeats=repeats,
        random_state=seed,
    )
    return _ranked(list(frame.columns), result.importances_mean, result.importances_std)


def _ranked(
    features: list[str], importance: Any, spread: Any, *, by_magnitude: bool = False, **extra: Any
) -> pd.DataFrame:
    """``feature, importance, spread`` (+ ``extra`` columns), most important first: by value,
    or by |value| (``by_magnitude``: attributions of either sign); ties keep input order."""
    table = pd.DataFrame({"feature": features, "importance": importance, "spread": spread, **extra})
    key = table["importance"].abs() if by_magnitude else table["importance"]
    order = key.sort_values(ascending=False, kind="stable").index
    return table.loc[order].reset_index(drop=True)


class _Fitted:
    """The estimator scikit-learn's permutation importance passes to the scorer: the model
    is already trained; scoring goes through ``predict`` on raw rows."""

    def fit(self, *_args: Any) -> _Fitted:  # pragma: no cover - never called
        return self


def plot(
    table: pd.DataFrame, method: str, title: str, path: Any, pixels: list[str], image: list[int] | None = None
) -> None:
    """The global explanation as a PNG: bars (ablation, tokens) or the pixel map
    (saliency: ``pixels`` are the numeric columns in image order, ``image`` = [C, H, W])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if method == "saliency" and image:
        _c, h, w = image
        by_name = dict(zip(table["feature"], table["importance"], strict=True))
        values = np.array([by_name.get(n, 0.0) for n in pixels[: h * w]])
        fig, ax = plt.subplots(figsize=(4, 4))
        shown = ax.imshow(values.reshape(h, w), cmap="viridis")
        fig.colorbar(shown, ax=ax)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        shown_rows = table.head(20).iloc[::-1]
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(shown_rows) + 1.2))
        ax.barh(shown_rows["feature"].astype(str), shown_rows["importance"], xerr=shown_rows["spread"])
        ax.axvline(0.0, color="black", linewidth=0.5)
        ax.set_xlabel({"ablation": "metric drop when shuffled", "tokens": "mean attribution"}.get(method, ""))
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
