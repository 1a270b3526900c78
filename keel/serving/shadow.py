"""Shadow scoring for ``keel serve --shadow``: the challenger scores the same live requests
as the champion, off the response path (a bounded queue and one worker thread; a full
queue drops the request from the shadow, never delays the answer). Agreement with the
champion's answers and both latencies are kept per (champion, challenger) pair, shown at
``GET /shadow`` and logged to MLflow (``<experiment>-shadow``: one run per pair, metrics
with a step per flush), so a reviewer sees how the challenger behaves on real traffic
before promoting it. Never answers a request, never moves an alias.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from keel.config.settings import Settings

log = logging.getLogger("keel.shadow")
SHADOW_RUN_TAG = "keel.shadow_of"


@dataclass
class PairStats:
    """What the challenger did on the traffic the champion answered."""

    champion: str
    challenger: str
    requests: int = 0
    rows: int = 0
    agreed: int = 0  # rows where the challenger's label equals the champion's
    abs_diff: float = 0.0  # summed |challenger - champion| of a numeric prediction (regression)
    errors: int = 0
    dropped: int = 0
    champion_ms: list[float] = field(default_factory=list)
    challenger_ms: list[float] = field(default_factory=list)
    logged_requests: int = 0  # up to which request MLflow has it

    def metrics(self) -> dict[str, float]:
        out = {"shadow/requests": float(self.requests), "shadow/rows": float(self.rows)}
        out["shadow/errors"] = float(self.errors)
        out["shadow/dropped"] = float(self.dropped)
        if self.rows:
            out["shadow/agreement"] = self.agreed / self.rows
            out["shadow/mean_abs_diff"] = self.abs_diff / self.rows
        for name, values in (("champion", self.champion_ms), ("challenger", self.challenger_ms)):
            if values:
                out[f"shadow/{name}_p50_ms"] = float(np.percentile(values, 50))
                out[f"shadow/{name}_p99_ms"] = float(np.percentile(values, 99))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"champion": self.champion, "challenger": self.challenger, **self.metrics()}


def compare(label: str, champion: pd.DataFrame, challenger: pd.DataFrame) -> tuple[int, float]:
    """(rows whose label agrees, summed absolute difference of a numeric prediction)."""
    for column in (label, "tags"):
        if column in champion.columns and column in challenger.columns:
            same = champion[column].astype(str).to_numpy() == challenger[column].astype(str).to_numpy()
            return int(same.sum()), 0.0
    if "prediction" in champion.columns and "prediction" in challenger.columns:
        diff = np.abs(champion["prediction"].to_numpy(float) - challenger["prediction"].to_numpy(float))
        return 0, float(diff.sum())
    return 0, 0.0


class Shadow(threading.Thread):
    """Holds the challenger, scores queued requests on it, flushes stats to MLflow."""

    def __init__(self, settings: Settings, queue_size: int = 64, flush_every: int = 20):
        super().__init__(name="keel-shadow", daemon=True)
        self.settings = settings
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.flush_every = flush_every
        self.challenger: Any = None  # keel.serving.server.LoadedModel
        self.stats: dict[tuple[str, str], PairStats] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def set_challenger(self, loaded: Any) -> None:
        self.challenger = loaded

    def submit(self, champion: Any, frame: pd.DataFrame, out: pd.DataFrame, champion_ms: float) -> None:
        """From the request path: enqueue or drop, never wait."""
        challenger = self.challenger
        if challenger is None or challenger.version == champion.version:
            return
        try:
            self.queue.put_nowait((champion.version, challenger, frame, out, champion_ms))
        except queue.Full:
            with self.lock:
                self._pair(champion.version, challenger.version).dropped += 1

    def _pair(self, champion: str, challenger: str) -> PairStats:
        key = (champion, challenger)
        if key not in self.stats:
            self.stats[key] = PairStats(champion, challenger)
        return self.stats[key]

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                champion, challenger, frame, out, champion_ms = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            start = time.perf_counter()
            try:
                shadow_out = challenger.predict(frame)
                ms = (time.perf_counter() - start) * 1000
                agreed, diff = compare(self.settings.features.label, out, shadow_out)
                error = False
            except Exception as exc:  # a challenger that fails is a finding, not an outage
                log.warning("shadow v%s failed on a request: %s", challenger.version, exc)
                ms, agreed, diff, error = 0.0, 0, 0.0, True
            with self.lock:
                pair = self._pair(champion, challenger.version)
                pair.requests += 1
                pair.rows += 0 if error else len(frame)
                pair.agreed += agreed
                pair.abs_diff += diff
                pair.errors += int(error)
                pair.champion_ms.append(champion_ms)
                if not error:
                    pair.challenger_ms.append(ms)
                due = pair.requests - pair.logged_requests >= self.flush_every
            if due:
                self.flush()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [p.to_json() for p in self.stats.values()]

    def flush(self) -> None:
        """Log every pair's stats that changed since the last flush to MLflow."""
        with self.lock:
            pending = [(p, p.metrics()) for p in self.stats.values() if p.requests > p.logged_requests]
            for pair, _ in pending:
                pair.logged_requests = pair.requests
        for pair, values in pending:
            try:
                log_pair(self.settings, pair, values)
            except Exception as exc:  # MLflow down: the stats stay at GET /shadow
                log.warning("shadow stats not logged: %s", exc)


def log_pair(settings: Settings, pair: PairStats, values: dict[str, float]) -> str:
    from mlflow.entities import Metric

    from keel.registry import tracking

    key = f"{settings.mlflow.model_name}:v{pair.champion}:v{pair.challenger}"
    name = f"shadow v{pair.challenger} beside champion v{pair.champion}"
    tags = {"champion": pair.champion, "challenger": pair.challenger}
    run_id = tracking.tagged_run(settings.mlflow_store, "-shadow", SHADOW_RUN_TAG, key, name, tags=tags)
    assert run_id is not None
    client = tracking.client(settings.mlflow_store)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, pair.requests) for k, v in sorted(values.items())])
    return str(run_id)
