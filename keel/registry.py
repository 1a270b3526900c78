"""Aliases with a history: promotion, rollback, out-of-band detection and the ledger.

The ledger is append-only and lives with the registry itself: one registered-model
tag per entry (``keel.ledger.000001`` = JSON), so every machine sharing a tracking
server sees the same history. Alias moves are serialised by a lock that is also held
in the registry: creating the registered model ``keel-lock-<model>`` succeeds for
exactly one caller (the registry's unique constraint), on sqlite and over HTTP alike.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from keel.errors import KeelError
from keel.settings import Settings

LEDGER_TAG = "keel.ledger."
LOCK_PREFIX = "keel-lock-"
STALE_LOCK_S = 600
_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


class PromotionError(KeelError, RuntimeError):
    """A promotion, rollback or lookup that keel refuses; aliases are untouched."""


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    at: str
    actor: str
    action: str  # initial | promote | auto-promote | rollback | out-of-band
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    host: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        frm = f"v{self.from_version}" if self.from_version else "(none)"
        return (
            f"#{self.seq:<4} {self.at}  {self.action:<12} {self.alias}: {frm} -> v{self.to_version}"
            f"  by {self.actor}: {self.reason}"
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Registry:
    def __init__(self, settings: Settings):
        from keel import tracking

        self.settings = settings
        self.name = settings.mlflow.model_name
        self.client = tracking.client(settings)

    # ------------------------------------------------------------ lookups
    def check_reachable(self) -> None:
        """Fail fast, naming the setting and the address, when a tracking server is down."""
        uri = self.settings.mlflow.tracking_uri
        if not uri.startswith(("http://", "https://")):
            return
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as exc:
            raise PromotionError(
                f"MLflow tracking server {uri} (setting mlflow.tracking_uri / "
                f"KEEL_MLFLOW__TRACKING_URI) is not reachable: {exc}"
            ) from exc

    def model(self):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise PromotionError(
                    f"registered model '{self.name}' does not exist in {self.settings.mlflow.registry_uri}"
                ) from exc
            raise

    def version(self, ref: str):
        """A version of this model, from '3' or 'models:/<name>/3'."""
        from mlflow.exceptions import MlflowException

        ref = str(ref).strip()
        m = _URI.match(ref)
        if m:
            if m["name"] != self.name:
                raise PromotionError(
                    f"{ref} is a version of model '{m['name']}', not of "
                    f"'{self.name}' (setting mlflow.model_name)"
                )
            ref = m["version"]
        if not ref.isdigit():
            raise PromotionError(f"{ref!r} is not a model version (a number, or models:/{self.name}/N)")
        self.model()
        try:
            return self.client.get_model_version(self.name, ref)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise PromotionError(f"model '{self.name}' has no version {ref}") from exc
            raise

    def alias(self, alias: str) -> str | None:
        aliases = getattr(self.model(), "aliases", {}) or {}
        version = aliases.get(alias)
        return str(version) if version is not None else None

    # ------------------------------------------------------------ ledger
    def ledger(self) -> list[LedgerEntry]:
        tags = self.model().tags or {}
        entries = [LedgerEntry(**json.loads(v)) for k, v in tags.items() if k.startswith(LEDGER_TAG)]
        return sorted(entries, key=lambda e: e.seq)

    def _append(self, **fields: Any) -> LedgerEntry:
        seq = max((e.seq for e in self.ledger()), default=0) + 1
        entry = LedgerEntry(seq=seq, at=_now(), host=f"{getpass.getuser()}@{socket.gethostname()}", **fields)
        self.client.set_registered_model_tag(
            self.name, f"{LEDGER_TAG}{seq:06d}", json.dumps(asdict(entry), sort_keys=True)
        )
        return entry

    def recorded_champion(self) -> str | None:
        moves = [e for e in self.ledger() if e.alias == "champion"]
        return moves[-1].to_version if moves else None

    def reconcile(self) -> LedgerEntry | None:
        """Record a champion move the ledger did not make (e.g. in the MLflow UI)."""
        actual, recorded = self.alias("champion"), self.recorded_champion()
        if actual == recorded:
            return None
        return self._append(
            actor="unknown (outside keel)",
            action="out-of-band",
            alias="champion",
            from_version=recorded,
            to_version=actual,
            reason="the champion alias was moved outside keel (e.g. the MLflow UI)",
        )

    # ------------------------------------------------------------ lock
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise alias moves across processes and machines sharing this registry."""
        from mlflow.exceptions import MlflowException

        lock = f"{LOCK_PREFIX}{self.name}"
        deadline = time.monotonic() + self.settings.promotion.lock_timeout_s
        while True:
            try:
                self.client.create_registered_model(
                    lock,
                    tags={"holder": f"{socket.gethostname()}:{os.getpid()}", "since": str(time.time())},
                    description=f"keel: an alias move of '{self.name}' is in progress",
                )
                break
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                self._break_if_stale(lock)
                if time.monotonic() > deadline:
                    raise PromotionError(
                        f"another promotion of '{self.name}' holds the lock "
                        f"(registered model '{lock}'); try again"
                    ) from exc
                time.sleep(0.2)
        try:
            yield
        finally:
            self.client.delete_registered_model(lock)

    def _break_if_stale(self, lock: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            since = float((self.client.get_registered_model(lock).tags or {}).get("since", "0"))
            if time.time() - since > STALE_LOCK_S:
                self.client.delete_registered_model(lock)
        except MlflowException:
            pass  # released meanwhile

    # ------------------------------------------------------------ moves
    def move_champion(
        self, version: str, *, actor: str, action: str, reason: str, evidence: dict[str, Any]
    ) -> LedgerEntry:
        """Caller holds the lock and has checked servability."""
        old = self.alias("champion")
        if old is not None and old != version:
            self.client.set_registered_model_alias(self.name, "previous", old)
        self.client.set_registered_model_alias(self.name, "champion", version)
        return self._append(
            actor=actor,
            action=action,
            alias="champion",
            from_version=old,
            to_version=version,
            reason=reason,
            evidence=evidence,
        )


def servability(settings: Settings, version: str) -> dict[str, Any]:
    """Load ``models:/<name>/<version>`` in a fresh process and predict on sample rows."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.mlflow.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.mlflow.registry_uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    uri = f"models:/{settings.mlflow.model_name}/{version}"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "keel.servability", uri, str(settings.promotion.servability_rows)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"ok": False, "error": proc.stderr[-2000:]}
    result["ok"] = bool(result.get("ok")) and proc.returncode == 0
    result["wall_seconds"] = round(time.perf_counter() - start, 3)
    return result


def _require_servable(settings: Settings, version: str) -> dict[str, Any]:
    result = servability(settings, version)
    if not result["ok"]:
        raise PromotionError(
            f"v{version} failed the servability check (loaded from the registry "
            f"in a fresh process): {result.get('error')}; champion unchanged"
        )
    return result


def promote(
    settings: Settings,
    version: str,
    *,
    reviewer: str,
    reason: str,
    force: bool = False,
    action: str = "promote",
) -> LedgerEntry:
    """Move ``champion`` to a blessed version (or any, with force and a reason)."""
    if not reason.strip():
        raise PromotionError("a promotion needs a reason (--reason)")
    if not reviewer.strip():
        raise PromotionError("a promotion needs a reviewer (--reviewer)")
    reg = Registry(settings)
    reg.check_reachable()
    mv = reg.version(version)
    version = str(mv.version)
    with reg.lock():
        reg.reconcile()
        if reg.alias("champion") == version:
            raise PromotionError(f"v{version} is already the champion")
        tags = mv.tags or {}
        gate = tags.get("gate.status", "not run")
        if gate != "blessed" and not force:
            raise PromotionError(
                f"v{version} is not blessed (gate: {gate}; {tags.get('gate.summary', '')}). "
                f"Promote it anyway only with --force and a --reason."
            )
        current = reg.alias("champion") or "none"
        if gate == "blessed" and tags.get("gate.baseline") != current and not force:
            raise PromotionError(
                f"v{version} was blessed against champion {tags.get('gate.baseline')}, but the champion "
                f"is now {current}: the blessing is stale. Retrain/re-gate, or --force with a --reason."
            )
        serv = _require_servable(settings, version)
        evidence = {
            "gate": gate,
            "gate_summary": (mv.tags or {}).get("gate.summary", ""),
            "gate_baseline": (mv.tags or {}).get("gate.baseline", ""),
            "forced": bool(force and gate != "blessed"),
            "servability": serv,
        }
        entry = reg.move_champion(version, actor=reviewer, action=action, reason=reason, evidence=evidence)
        reg.client.set_model_version_tag(reg.name, version, "promotion", "champion")
        return entry


def rollback(settings: Settings, *, reason: str, actor: str, to: str | None = None) -> LedgerEntry:
    """Restore the previous champion (or ``to``) after a servability check."""
    if not reason.strip():
        raise PromotionError("a rollback needs a reason (--reason)")
    reg = Registry(settings)
    reg.check_reachable()
    target = str(reg.version(to).version) if to else None
    with reg.lock():
        reg.reconcile()
        current = reg.alias("champion")
        if target is None:
            target = reg.alias("previous")
            if target is None:
                raise PromotionError(
                    f"'{reg.name}' has no previous champion to roll back to; name one with --to"
                )
        if target == current:
            raise PromotionError(f"v{target} is already the champion")
        serv = _require_servable(settings, target)
        return reg.move_champion(
            target,
            actor=actor,
            action="rollback",
            reason=reason,
            evidence={"servability": serv, "rolled_back": current},
        )


def status(settings: Settings) -> dict[str, Any]:
    """champion, challenger and previous: version, metrics, data version, who promoted."""
    reg = Registry(settings)
    reg.check_reachable()
    ledger = reg.ledger()

    out: dict[str, Any] = {"model": reg.name, "out_of_band": None}
    actual, recorded = reg.alias("champion"), reg.recorded_champion()
    if actual != recorded:
        out["out_of_band"] = f"champion is v{actual} but keel's ledger last set v{recorded}"
    for alias in ("champion", "challenger", "previous"):
        version = reg.alias(alias)
        if version is None:
            out[alias] = None
            continue
        tags = reg.client.get_model_version(reg.name, version).tags or {}
        moves = [e for e in ledger if e.to_version == version and e.alias == "champion"]
        out[alias] = {
            "version": version,
            "data_version": tags.get("data_version"),
            "gate": tags.get("gate.status", "not run"),
            "metrics": {k: v for k, v in sorted(tags.items()) if k.startswith("test/")},
            "promoted_by": (f"{moves[-1].actor} ({moves[-1].action}, {moves[-1].at})" if moves else None),
        }
    return out
