"""Simulation tasks: a scratch workspace, the champion scored on each new batch before
it is ingested, the batch's record, and the timeline report. Scores are the objective's
headline metric (binary: roc_auc, multiclass: accuracy, regression: rmse); the record's
``*_auc`` fields keep their names for the timeline.json readers that exist."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from keel.config.settings import DriftConfig, MlflowStore, ReportsConfig, Settings, WorkloadConfig


@dataclass(frozen=True)
class MonthRecord:
    month: str
    champion_before: str | None
    forward_auc: float | None  # the champion before, on the new month (never seen)
    drift_share: float | None
    drifted: bool | None
    challenger: str
    gate: str
    challenger_auc: float | None  # test rows of the gate: challenger ...
    champion_auc: float | None  # ... and the champion it was compared with
    champion_after: str | None
    decision: str
    guardrail: str = ""  # the champion before, judged on the month first: held | rolled-back | review | ...
    guardrail_detail: str = ""


@task(name="simulation-workspace", cache_policy=NONE)
def simulation_workspace(settings: Settings, months: list[str]) -> Settings:
    """A fresh workspace under reports/simulation/ with the same config (never the user's data)."""
    from keel.workloads import init_workspace

    root = settings.reports.dir / "simulation" / f"{months[0]}_{months[-1]}"
    shutil.rmtree(root / "ws", ignore_errors=True)
    ws = init_workspace(root / "ws")
    raw = settings.model_dump(mode="json")
    return Settings.model_validate(
        {
            **raw,
            "workspace": str(ws),
            "data": {**raw["data"], "dir": str(ws / "data")},
            "reports": {"dir": str(root)},
            "mlflow": {
                **raw["mlflow"],
                "tracking_uri": f"sqlite:///{ws / 'mlflow' / 'mlflow.db'}",
                "registry_uri": f"sqlite:///{ws / 'mlflow' / 'mlflow.db'}",
                "artifact_root": (ws / "mlflow" / "artifacts").as_uri(),
            },
            "dvc": {**raw["dvc"], "remote_url": str(ws / "dvc-remote")},
        }
    )


def headline(workload: WorkloadConfig) -> str:
    """The metric a simulation follows: the workload objective's headline (e.g. roc_auc)."""
    from keel.model.objectives import KINDS
    from keel.workloads import build

    return KINDS[build(workload.name, workload.target, workload.params).objective()].headline


@task(name="score-champion-forward", cache_policy=NONE)
def score_champion_forward(
    store: MlflowStore, workload: WorkloadConfig, label: str, sample_rows: int, month: str
) -> tuple[str | None, float | None]:
    """The headline metric of the current champion on a batch it has not seen (``label``: its
    label column; ``sample_rows`` > 0: the batch sampled as ingest samples it)."""

    from keel.registry import tracking
    from keel.workloads import build

    version = tracking.current_alias_version(store, "champion")
    if version is None:
        return None, None
    tracking.use_tracking(store)
    model = tracking.load_pyfunc(store, f"models:/{store.mlflow.model_name}/{version}")
    frame = build(workload.name, workload.target, workload.params).build_batch(month, sample_rows)
    out = model.predict(frame[model.metadata.get_input_schema().input_names()])
    objective = model.unwrap_python_model().objective  # the label mapping the model carries
    return version, float(objective.metrics(frame[label], out)[headline(workload)])


@task(name="record-month", cache_policy=NONE)
def record_month(
    store: MlflowStore, workload: WorkloadConfig, month: str, forward: tuple, drift, trained
) -> MonthRecord:
    from keel.registry import tracking

    client = tracking.client(store)
    gate = json.loads(Path(client.download_artifacts(trained.run_id, "gate/gate.json")).read_text())
    metric = f"test/{headline(workload)}"
    challenger_auc = client.get_run(trained.run_id).data.metrics.get(metric)
    baseline = next(
        (c["baseline"] for c in gate["checks"] if c["name"].startswith(f"{metric} ") and c["baseline"]),
        None,
    )
    return MonthRecord(
        month=month,
        champion_before=forward[0],
        forward_auc=forward[1],
        drift_share=None if drift is None else drift.share,
        drifted=None if drift is None else drift.drifted,
        challenger=trained.model_version,
        gate=gate["status"],
        challenger_auc=challenger_auc,
        champion_auc=baseline,
        champion_after=tracking.current_alias_version(store, "champion"),
        decision=trained.decision,
        guardrail=trained.guardrail,
        guardrail_detail=trained.guardrail_detail,
    )


def f(x: float | None) -> str:
    """A score in the timeline's tables ("—": none)."""
    return "—" if x is None else f"{x:.4f}"


def forward_table(records: list[MonthRecord], metric: str) -> list[str]:
    """Each promoted version: its gate score (on its holdout) beside its score on the batch
    after (before anyone trained on it): how well the gate foretold the next batch."""
    held = sum(1 for r in records if r.gate == "rejected")
    lines = [
        "## The gate against the next batch",
        "",
        f"Challengers held by the gate: {held} of {len(records)}.",
        "",
        f"| promoted at | version | gate {metric} | {metric} on the next batch | next - gate |",
        "|---|---|---|---|---|",
    ]
    gaps = []
    for now, after in itertools.pairwise(records):
        if now.champion_after != now.challenger or now.decision.startswith("held"):
            continue
        gap = (
            None
            if after.forward_auc is None or now.challenger_auc is None
            else after.forward_auc - now.challenger_auc
        )
        if gap is not None:
            gaps.append(gap)
        lines.append(
            f"| {now.month} | v{now.challenger} | {f(now.challenger_auc)} | {f(after.forward_auc)} "
            f"| {'—' if gap is None else f'{gap:+.4f}'} |"
        )
    if gaps:
        lines += ["", f"Mean next - gate: {sum(gaps) / len(gaps):+.4f} over {len(gaps)} promotions."]
    return lines


@task(name="write-timeline", cache_policy=NONE)
def write_timeline(
    reports: ReportsConfig,
    drift: DriftConfig,
    workload: WorkloadConfig,
    workspace: Path,
    records: list[MonthRecord],
) -> Path:
    """timeline.md, timeline.png and timeline.json under ``reports.dir``: each batch's champion,
    its headline metric on the unseen batch, the guardrail, drift (against
    ``drift.share_threshold``) and the gate; ``workspace``: the simulation's own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from prefect.artifacts import create_markdown_artifact

    out = reports.dir
    months = [r.month for r in records]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), dpi=100, sharex=True)
    ax1.plot(months, [r.forward_auc for r in records], "o-", label="champion on the new month (unseen)")
    ax1.plot(months, [r.challenger_auc for r in records], "s--", label="challenger (gate test rows)")
    ax1.plot(months, [r.champion_auc for r in records], "^:", label="champion (gate test rows)")
    for r in records:
        ax1.annotate(
            f"v{r.champion_after}",
            (r.month, r.challenger_auc or 0),
            fontsize=7,
            textcoords="offset points",
            xytext=(0, 6),
        )
    ax1.set_ylabel(headline(workload))
    ax1.legend(fontsize=7)
    ax2.bar(
        months,
        [r.drift_share or 0 for r in records],
        color=["tab:red" if r.drifted else "tab:gray" for r in records],
    )
    ax2.axhline(drift.share_threshold, color="k", lw=0.8, ls="--")
    ax2.set_ylabel("drift share")
    ax2.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(out / "timeline.png")
    plt.close(fig)

    metric = headline(workload)
    lines = [
        "# keel simulation: batch by batch",
        "",
        f"Workspace: `{workspace}` (its own MLflow store and DVC remote).",
        "",
        f"| batch | champion before | champion {metric} on the new batch | guardrail | drift share "
        f"| challenger | gate | challenger {metric} (gate rows) | champion {metric} (same rows) "
        "| champion after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.month} | {('v' + r.champion_before) if r.champion_before else '—'} | {f(r.forward_auc)} "
        f"| {r.guardrail or '—'} | {f(r.drift_share)}{' (drifted)' if r.drifted else ''} | v{r.challenger} "
        f"| {r.gate} | {f(r.challenger_auc)} | {f(r.champion_auc)} | v{r.champion_after} |"
        for r in records
    ]
    lines += ["", *forward_table(records, metric), "", "![timeline](timeline.png)"]
    rollbacks = [r for r in records if r.guardrail in ("rolled-back", "review")]
    lines += ["", "## Guardrail", ""] + (
        [f"- {r.month}: {r.guardrail}: {r.guardrail_detail}" for r in rollbacks] or ["No rule broke."]
    )
    text = "\n".join(lines) + "\n"
    (out / "timeline.md").write_text(text)
    (out / "timeline.json").write_text(json.dumps([asdict(r) for r in records], indent=1) + "\n")
    create_markdown_artifact(key="keel-simulation", markdown=text, description="month-by-month timeline")
    return out / "timeline.md"
