"""Aliases with a history: promotion, rollback, out-of-band detection and the ledger.

The ledger is append-only and lives with the registry itself: one registered-model
tag per entry (``keel.ledger.000001`` = JSON), so every machine sharing a tracking
server sees the same history. It is tamper-evident: each entry carries the hash of the
one before it (``prev``) and its own (``hash``, sha256 of its canonical JSON), and each
entry is also written as a file artifact ``ledger/000001.json`` of the model's ledger
run, in the experiment ``<experiment>-ledger`` (MLflow's UI edits and deletes tags, not
artifacts). ``verify_ledger`` checks the
chain, the copies and the aliases, and names the first entry that was edited, deleted,
reordered or is missing. Alias moves are serialised by a lock that is also held
in the registry: creating the registered model ``keel-lock-<model>`` succeeds for
exactly one caller (the registry's unique constraint), on sqlite and over HTTP alike.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from keel.config.settings import MlflowStore, PromotionConfig
from keel.errors import PromotionError

LEDGER_TAG = "keel.ledger."
LOCK_PREFIX = "keel-lock-"
STALE_LOCK_S = 600
_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    at: str
    actor: str
    action: (
        str  # initial | promote | auto-promote | rollback | guardrail-rollback | out-of-band | enforce-revert
    )
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    host: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    prev: str = ""  # hash of the entry before ("genesis" for the first); "" = before the chain
    hash: str = ""  # sha256 of this entry's canonical JSON without "hash"

    def line(self) -> str:
        frm = f"v{self.from_version}" if self.from_version else "(none)"
        return (
            f"#{self.seq:<4} {self.at}  {self.action:<12} {self.alias}: {frm} -> v{self.to_version}"
            f"  by {self.actor}: {self.reason}"
        )


GENESIS = "genesis"
LEDGER_RUN_TAG = "keel.ledger_of"


def canonical(entry: LedgerEntry) -> str:
    return json.dumps(asdict(entry), sort_keys=True, separators=(",", ":"))


def digest(entry: LedgerEntry) -> str:
    """sha256 of the entry's canonical JSON without its own hash (any entry, chained or not)."""
    body = {k: v for k, v in asdict(entry).items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Registry:
    def __init__(self, store: MlflowStore, promotion: PromotionConfig):
        from keel.registry import tracking

        self.store, self.promotion = store, promotion
        self.name = store.mlflow.model_name
        self.client = tracking.client(store)
        self._ledger_run: str | None = None  # found once per Registry: every append logs to it

    # ------------------------------------------------------------ lookups
    def check_reachable(self) -> None:
        """Fail fast, naming the setting and the address, when a tracking server is down."""
        uri = self.store.mlflow.tracking_uri
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
                    f"registered model '{self.name}' does not exist in {self.store.mlflow.registry_uri}"
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
    def ledger_tags(self) -> dict[str, str]:
        """The ledger as stored: tag key -> JSON."""
        return {k: v for k, v in (self.model().tags or {}).items() if k.startswith(LEDGER_TAG)}

    def ledger(self) -> list[LedgerEntry]:
        entries = [LedgerEntry(**json.loads(v)) for v in self.ledger_tags().values()]
        return sorted(entries, key=lambda e: e.seq)

    def ledger_run(self, create: bool = False) -> str | None:
        """The run whose artifacts hold the anchored copies (``ledger/<seq>.json``), in
        ``<experiment>-ledger``: apart from the training runs (as drift has ``-monitoring``)."""
        from keel.registry.tracking import tagged_run

        if self._ledger_run is None:
            self._ledger_run = tagged_run(
                self.store,
                "-ledger",
                LEDGER_RUN_TAG,
                self.name,
                f"ledger of {self.name}",
                create,
            )
        return self._ledger_run

    def anchored(self) -> dict[int, str]:
        """seq -> the anchored copy's JSON."""
        import tempfile
        from pathlib import Path

        run_id = self.ledger_run()
        if run_id is None:
            return {}
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per verify is noise
        with tempfile.TemporaryDirectory() as tmp:
            names = [f.path for f in self.client.list_artifacts(run_id, "ledger")]
            if not names:
                return {}
            local = Path(self.client.download_artifacts(run_id, "ledger", tmp))
            return {int(p.stem): p.read_text() for p in sorted(local.glob("*.json"))}

    def _append(self, **fields: Any) -> LedgerEntry:
        entries = self.ledger()
        seq = max((e.seq for e in entries), default=0) + 1
        prev = digest(entries[-1]) if entries else GENESIS
        entry = LedgerEntry(
            seq=seq, at=_now(), host=f"{getpass.getuser()}@{socket.gethostname()}", prev=prev, **fields
        )
        entry = LedgerEntry(**{**asdict(entry), "hash": digest(entry)})
        text = json.dumps(asdict(entry), sort_keys=True)
        run_id = self.ledger_run(create=True)
        assert run_id is not None
        self.client.log_text(run_id, text, f"ledger/{seq:06d}.json")  # the copy first: a tag never lacks one
        self.client.set_registered_model_tag(self.name, f"{LEDGER_TAG}{seq:06d}", text)
        return entry

    def recorded_champion(self) -> str | None:
        moves = [e for e in self.ledger() if e.alias == "champion"]
        return moves[-1].to_version if moves else None

    def reconcile(self) -> LedgerEntry | None:
        """Record a champion move the ledger did not make (e.g. in the MLflow UI); with
        ``[promotion] enforce``, move it back to the ledger's champion and record that too.
        Caller holds the lock."""
        actual, recorded = self.alias("champion"), self.recorded_champion()
        if actual == recorded:
            return None
        entry = self._append(
            actor="unknown (outside keel)",
            action="out-of-band",
            alias="champion",
            from_version=recorded,
            to_version=actual,
            reason="the champion alias was moved outside keel (e.g. the MLflow UI)",
        )
        if not self.promotion.enforce or recorded is None:
            return entry
        self.client.set_registered_model_alias(self.name, "champion", recorded)
        return self._append(
            actor="keel (promotion.enforce)",
            action="enforce-revert",
            alias="champion",
            from_version=actual,
            to_version=recorded,
            reason=f"v{actual} was made champion outside keel; moved back to v{recorded}, the champion the "
            f"ledger attests (promotion.enforce)",
        )

    # ------------------------------------------------------------ lock
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise alias moves across processes and machines sharing this registry."""
        from mlflow.exceptions import MlflowException

        lock = f"{LOCK_PREFIX}{self.name}"
        deadline = time.monotonic() + self.promotion.lock_timeout_s
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


@dataclass(frozen=True)
class Verification:
    entries: int
    chained: int  # entries written with a hash (older ones predate the chain)
    problems: list[str]  # the first one names the first broken entry
    alias_problem: str = ""  # the champion alias disagrees with the ledger's last move (also in problems)
    attested: str | None = None  # the champion the ledger's last move set

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def chain_ok(self) -> bool:
        """The record itself is intact (the alias may still have been moved outside keel)."""
        return self.problems == ([self.alias_problem] if self.alias_problem else [])


def verify_ledger(reg: Registry) -> Verification:
    """Check the ledger: every entry's hash, the chain of ``prev`` hashes, each entry
    against its anchored copy, no gaps, no copies without their entry, and the champion
    alias against the last champion move. Problems in seq order, the first one first."""
    problems: list[tuple[int, str]] = []
    tags = reg.ledger_tags()
    entries: dict[int, LedgerEntry] = {}
    for key, text in tags.items():
        slot = int(key.removeprefix(LEDGER_TAG))
        try:
            entry = LedgerEntry(**json.loads(text))
        except (ValueError, TypeError) as exc:
            problems.append((slot, f"entry #{slot} is not a ledger entry any more (edited): {exc}"))
            continue
        if entry.seq != slot:
            problems.append((slot, f"entry #{slot} holds entry #{entry.seq}'s content (reordered or edited)"))
        entries[slot] = entry
    copies = reg.anchored()
    last = max([*entries, *copies], default=0)
    chained = 0
    for seq in range(1, last + 1):
        found = entries.get(seq)
        if found is None:
            how = "its anchored copy remains" if seq in copies else "no copy either"
            problems.append((seq, f"entry #{seq} is missing (deleted; {how})"))
            continue
        entry = found
        if not entry.hash:
            if chained:
                problems.append((seq, f"entry #{seq} has no hash after the chain began (edited or inserted)"))
            continue  # written before the chain existed
        chained += 1
        if digest(entry) != entry.hash:
            problems.append((seq, f"entry #{seq} was edited: its content no longer matches its hash"))
        before = entries.get(seq - 1)
        expected = digest(before) if before is not None else (GENESIS if seq == 1 else None)
        if expected is not None and entry.prev != expected:
            problems.append(
                (seq, f"entry #{seq} does not follow entry #{seq - 1} (reordered, or #{seq - 1} replaced)")
            )
        copy = copies.get(seq)
        if copy is None:
            problems.append(
                (seq, f"entry #{seq} has no anchored copy (ledger/{seq:06d}.json): inserted outside keel")
            )
        elif json.loads(copy) != json.loads(tags[f"{LEDGER_TAG}{seq:06d}"]):
            problems.append(
                (seq, f"entry #{seq} differs from its anchored copy ledger/{seq:06d}.json (edited)")
            )
    moves = [entries[s] for s in sorted(entries) if entries[s].alias == "champion"]
    actual = reg.alias("champion")
    alias_problem = ""
    if moves and actual != moves[-1].to_version:
        alias_problem = (
            f"the champion alias is v{actual}, but the ledger's last move set v{moves[-1].to_version}"
        )
        problems.append((last + 1, alias_problem))
    problems.sort(key=lambda p: p[0])
    attested = moves[-1].to_version if moves and moves[-1].action != "out-of-band" else None
    return Verification(len(entries), chained, [p for _, p in problems], alias_problem, attested)


def attested_champion(store: MlflowStore, promotion: PromotionConfig) -> tuple[str | None, str]:
    """(the champion the verified ledger attests, or None; why not). With ``[promotion]
    enforce`` an out-of-band move is reverted first. What ``keel serve`` serves under enforce."""
    reg = Registry(store, promotion)
    if promotion.enforce and reg.alias("champion") != reg.recorded_champion():
        with reg.lock():
            reg.reconcile()
    checked = verify_ledger(reg)
    if not checked.chain_ok:
        return None, f"the ledger does not verify: {checked.problems[0]}"
    if checked.attested is None:
        return None, "no keel-recorded move attests a champion (the last move was out-of-band, or none)"
    return checked.attested, ""


def servability(store: MlflowStore, promotion: PromotionConfig, version: str) -> dict[str, Any]:
    """Fetch ``models:/<name>/<version>`` from the registry, then load it in a fresh process
    and predict on sample rows, with pickle deserialization off, as ``keel serve`` loads it.
    The fetch happens here, where the store is already open: the fresh process proves the
    model loads from its own files alone and never pays for opening the store."""
    import tempfile
    from pathlib import Path

    import mlflow

    from keel.registry.servability import SAFE_LOADING, run_fresh

    uri = f"models:/{store.mlflow.model_name}/{version}"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="keel-servability-") as tmp:
        try:
            source = Registry(store, promotion).client.get_model_version_download_uri(
                store.mlflow.model_name, version
            )
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=tmp, tracking_uri=store.mlflow.tracking_uri
            )
        except Exception as exc:  # a version whose files cannot be fetched is not servable
            return {"ok": False, "uri": uri, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **SAFE_LOADING}
        result = run_fresh(local, promotion.servability_rows, env, Path(tmp) / "check.log")
    result["uri"] = uri
    result["wall_seconds"] = round(time.perf_counter() - start, 3)
    return result


def _require_servable(store: MlflowStore, promotion: PromotionConfig, version: str) -> dict[str, Any]:
    result = servability(store, promotion, version)
    if not result["ok"]:
        raise PromotionError(
            f"v{version} failed the servability check (loaded from the registry "
            f"in a fresh process): {result.get('error')}; champion unchanged"
        )
    return result


def promote(
    store: MlflowStore,
    promotion: PromotionConfig,
    version: str,
    *,
    reviewer: str,
    reason: str,
    force: bool = False,
    action: str = "promote",
) -> LedgerEntry:
    """Move ``champion`` to a blessed version (or any, with force and a reason)."""
    from keel.registry.identity import current_actor, require_reviewer

    if not reason.strip():
        raise PromotionError("a promotion needs a reason (--reason)")
    reg = Registry(store, promotion)
    reg.check_reachable()
    automatic = action in ("initial", "auto-promote")  # by policy: the reviewer is a label, not a claim
    who = current_actor(store, None if automatic else (reviewer.strip() or None))
    if not automatic and not who.authenticated and not reviewer.strip():
        raise PromotionError("a promotion needs a reviewer (--reviewer)")
    require_reviewer(promotion, who, f"promote v{version}")
    reviewer = reviewer if automatic else who.name
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
        serv = _require_servable(store, promotion, version)
        evidence = {
            "gate": gate,
            "gate_summary": (mv.tags or {}).get("gate.summary", ""),
            "gate_baseline": (mv.tags or {}).get("gate.baseline", ""),
            "forced": bool(force and gate != "blessed"),
            "servability": serv,
            "identity": who.to_json(),
        }
        entry = reg.move_champion(version, actor=reviewer, action=action, reason=reason, evidence=evidence)
        reg.client.set_model_version_tag(reg.name, version, "promotion", "champion")
        return entry


def rollback(
    store: MlflowStore,
    promotion: PromotionConfig,
    *,
    reason: str,
    actor: str,
    to: str | None = None,
    action: str = "rollback",
    evidence: dict[str, Any] | None = None,
    expect: str | None = None,
) -> LedgerEntry:
    """Restore the previous champion (or ``to``) after a servability check. ``expect``: the
    champion the caller judged; refused when another move got there first. A person's
    rollback (``action="rollback"``) is by a reviewer; the guardrail's restores an attested one."""
    from keel.registry.identity import current_actor, require_reviewer

    if not reason.strip():
        raise PromotionError("a rollback needs a reason (--reason)")
    reg = Registry(store, promotion)
    reg.check_reachable()
    human = action == "rollback"
    who = current_actor(store, (actor.strip() or None) if human else None)
    if human:
        require_reviewer(promotion, who, "roll back the champion")
        actor = who.name
    target = str(reg.version(to).version) if to else None
    with reg.lock():
        reg.reconcile()
        current = reg.alias("champion")
        if expect is not None and current != expect:
            raise PromotionError(
                f"the champion moved from v{expect} to v{current} meanwhile; nothing rolled back"
            )
        if target is None:
            target = reg.alias("previous")
            if target is None:
                raise PromotionError(
                    f"'{reg.name}' has no previous champion to roll back to; name one with --to"
                )
        if target == current:
            raise PromotionError(f"v{target} is already the champion")
        serv = _require_servable(store, promotion, target)
        return reg.move_champion(
            target,
            actor=actor,
            action=action,
            reason=reason,
            evidence={
                **(evidence or {}),
                "servability": serv,
                "rolled_back": current,
                "identity": who.to_json(),
            },
        )


def status(store: MlflowStore, promotion: PromotionConfig) -> dict[str, Any]:
    """champion, challenger and previous: version, metrics, data version, who promoted."""
    reg = Registry(store, promotion)
    reg.check_reachable()
    ledger = reg.ledger()

    out: dict[str, Any] = {"model": reg.name, "out_of_band": None, "ledger_problem": None, "enforced": None}
    actual, recorded = reg.alias("champion"), reg.recorded_champion()
    if actual != recorded and promotion.enforce and recorded is not None:
        with reg.lock():
            reverted = reg.reconcile()
        out["enforced"] = reverted.reason if reverted else None
        ledger, actual = reg.ledger(), reg.alias("champion")
        recorded = reg.recorded_champion()
    if actual != recorded:
        out["out_of_band"] = f"champion is v{actual} but keel's ledger last set v{recorded}"
    else:  # the alias agrees: is the record itself intact?
        checked = verify_ledger(reg)
        out["ledger_problem"] = checked.problems[0] if checked.problems else None
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
