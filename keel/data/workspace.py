"""The workspace edge: git, DVC and the directory layout.

Every function here takes explicit paths or the workspace's ``DataStore`` (its git
repository, data directory and DVC remote) and is called from a task or the CLI; nothing runs
at import time.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from keel.config.settings import WORKSPACE_FILE, DataStore, Settings
from keel.errors import KeelError

# "/data": DVC's own entry for the tracked directory, written up front so that `dvc add`
# leaves the committed .gitignore as it is
GITIGNORE_LINES = [
    "/data",
    "/mlflow/*",
    "!/mlflow/.gitignore",
    "/reports/",
    "/dvc-remote/",
    "/.venv/",
    "__pycache__/",
    "*.egg-info/",
    "/.keel/",
]

WORKSPACE_TEMPLATE = """\
# keel workspace settings. Keys and defaults: keel/config/defaults.toml, then the
# workload's own (`keel workloads`). KEEL_<SECTION>__<KEY> variables override this file.

{workload}
[data]
suite = "{suite}"  # the GX suite batches must pass; edit it to change the rules

[dvc]
remote = "local"
remote_url = "dvc-remote"
"""
SUITE_FILE = "suite.json"


CACHE_TYPES = "reflink,hardlink,copy"
VERSIONS_FILE = "data-versions.jsonl"  # keel's log of data versions, committed with data.dvc


class DataVersionError(KeelError, RuntimeError):
    """data/ and data.dvc disagree, or a version cannot be materialised."""


@dataclass(frozen=True)
class DataVersion:
    md5: str  # DVC md5 of data/ ("<hex>.dir")
    files: int
    size: int

    @property
    def short(self) -> str:
        return self.md5.removesuffix(".dir")[:10]


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _git(args: list[str], cwd: Path) -> str | None:
    """``git <args>``'s stripped output, or None when it fails (no repo, no such ref...)."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit(directory: Path) -> str:
    """HEAD of the git repo holding ``directory``, '+dirty' if it has changes; 'none' if no repo."""
    try:
        sha = _run(["git", "rev-parse", "HEAD"], directory)
    except (RuntimeError, FileNotFoundError):
        return "none"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], directory)
    return f"{sha}+dirty" if dirty else sha


def _append_missing(path: Path, lines: list[str]) -> None:
    have = path.read_text().splitlines() if path.exists() else []
    new = [line for line in lines if line not in have]
    if new:
        with path.open("a") as fh:
            if have and have[-1] != "":
                fh.write("\n")
            fh.write("\n".join(new) + "\n")


def init_workspace(
    directory: Path,
    workload_toml: str = "",
    default_suite: Callable[[Settings], dict[str, Any]] | None = None,
) -> Path:
    """Make ``directory`` a ready keel workspace (idempotent): git, DVC, local remote,
    MLflow store dir, a keel.toml (``workload_toml``: its [workload] part, from
    Workload.init_toml; "" = the default workload) and, from ``default_suite`` (the chosen
    workload's, keel.workloads.init_workspace), the GX suite written out as suite.json.
    Existing files are kept."""
    from dvc.repo import Repo

    ws = Path(directory).expanduser().resolve()
    ws.mkdir(parents=True, exist_ok=True)
    if not (ws / ".git").exists():
        _run(["git", "init", "-q"], ws)
    if not (ws / ".dvc").exists():
        _quiet_dvc_init(ws)
    if not (ws / WORKSPACE_FILE).exists():
        (ws / WORKSPACE_FILE).write_text(WORKSPACE_TEMPLATE.format(workload=workload_toml, suite=SUITE_FILE))
        if default_suite is not None:
            _write_default_suite(ws, default_suite)
    with Repo(str(ws)) as repo, repo.config.edit("repo") as conf:
        # keel only ever replaces partitions atomically (new inode), so linking the
        # cache is safe; it makes `dvc add` ~2x faster than copying (bench/)
        conf["cache"].setdefault("type", CACHE_TYPES)
        _name_default_remote(conf, ws)
    (ws / "mlflow").mkdir(exist_ok=True)
    (ws / "mlflow" / ".gitignore").write_text("*\n!.gitignore\n")
    _append_missing(ws / ".gitignore", GITIGNORE_LINES)
    _first_commit(ws)
    return ws


def _quiet_dvc_init(ws: Path) -> None:
    """``dvc init`` without its "You can now commit the changes to git" (keel makes the
    workspace's first commit itself); its warnings still show."""
    import logging

    from dvc.repo import Repo

    dvc_log = logging.getLogger("dvc")
    level = dvc_log.level
    dvc_log.setLevel(logging.WARNING)
    try:
        Repo.init(str(ws)).close()
    finally:
        dvc_log.setLevel(level)


def _write_default_suite(ws: Path, default_suite: Callable[[Settings], dict[str, Any]]) -> None:
    """suite.json: the workload's default suite, for the team to read and edit."""
    from keel.config.settings import load_settings

    if (ws / SUITE_FILE).exists():
        return
    settings = load_settings(ws, environ={}, overrides={"data.suite": ""})
    suite = default_suite(settings)
    (ws / SUITE_FILE).write_text(json.dumps(suite, indent=1) + "\n")


# What `keel init` writes and commits; nothing else of the directory is staged.
INIT_FILES = (
    WORKSPACE_FILE,
    SUITE_FILE,
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "mlflow/.gitignore",
)


def _name_default_remote(conf: dict[str, Any], ws: Path) -> None:
    """``dvc remote add -d``: the workspace's remote, as its keel.toml names it, goes into
    the committed .dvc/config, so a clone knows where `dvc pull` fetches from. A local
    path is written absolute: a relative one would resolve inside each clone (its own,
    empty, git-ignored dvc-remote/), while an absolute one reaches the owner's remote
    from any clone on the same machine or a shared filesystem. Credentials never go
    here (DVC reads them from AWS_* variables or config.local). An existing default
    remote is the team's choice and is kept."""
    from keel.config.settings import load_settings

    if conf["core"].get("remote"):
        return
    data = load_settings(ws, environ={}).data_store
    conf["remote"][data.dvc.remote] = remote_config(data)
    conf["core"]["remote"] = data.dvc.remote


def _first_commit(ws: Path) -> None:
    """A new repository gets one commit of keel's own files, so every version records a
    real git sha. A repository that already has commits is left alone."""
    if _git(["rev-parse", "--verify", "-q", "HEAD"], ws) is not None:
        return
    files = [f for f in INIT_FILES if (ws / f).exists()]
    _run(["git", "add", "--", *files], ws)
    identity = _git_identity(ws)
    message = "keel init: data, DVC and MLflow layout"
    _run(["git", *identity, "commit", "-q", "-m", message, "--", *files], ws)


def configure_remote(data: DataStore) -> None:
    """Make DVC's view of the remote match keel's data: where the committed
    .dvc/config already names it (``keel init``), nothing is added; where data differ
    (an environment override, a workspace keel did not init) the difference goes to
    ``.dvc/config.local``, which is never committed. Creates a local remote directory
    when the URL is a path; hashes with every core."""
    from dvc.repo import Repo

    url = data.dvc.remote_url
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
    with Repo(str(data.workspace)) as repo:
        _sync_remote(repo, data)


def _sync_remote(repo: Any, data: DataStore) -> None:
    """config.local of ``repo`` holds what data say of the remote that the committed
    config does not (nothing, when they agree), and the hashing parallelism."""
    want = remote_config(data)
    committed = repo.config.load_one("repo")
    same_remote = committed["core"].get("remote") == data.dvc.remote
    same_url = dict(committed["remote"].get(data.dvc.remote, {})) == want
    with repo.config.edit("local") as conf:
        if same_remote and same_url:
            conf["remote"].pop(data.dvc.remote, None)
            conf["core"].pop("remote", None)
        else:
            conf["remote"][data.dvc.remote] = want
            conf["core"]["remote"] = data.dvc.remote
        conf["core"]["checksum_jobs"] = os.cpu_count() or 1


def remote_config(data: DataStore) -> dict[str, str]:
    """The DVC remote's section: its URL, and the endpoint of an S3-compatible store.
    Credentials are never written: DVC takes them from AWS_* environment variables."""
    conf = {"url": data.dvc.remote_url}
    if data.dvc.endpoint_url:
        conf["endpointurl"] = data.dvc.endpoint_url
    return conf


def read_data_version(dvc_file: Path) -> DataVersion | None:
    """The version recorded in data.dvc, or None when there is none yet."""
    if not dvc_file.exists():
        return None
    meta = yaml.safe_load(dvc_file.read_text()) or {}
    outs = meta.get("outs") or []
    if not outs or "md5" not in outs[0]:
        raise DataVersionError(f"{dvc_file}: no 'outs[0].md5' entry; is it a DVC pointer file?")
    out = outs[0]
    return DataVersion(md5=out["md5"], files=int(out.get("nfiles", 0)), size=int(out.get("size", 0)))


def add_and_push(data: DataStore) -> DataVersion:
    """``dvc add data`` then ``dvc push`` of that version to the configured remote."""
    from dvc.repo import Repo

    configure_remote(data)
    with Repo(str(data.workspace)) as repo:
        repo.scm_context.quiet = True  # no "git add data.dvc" hints: keel commits what it owns
        repo.add(str(data.dir))
        repo.push(targets=[str(data.dvc_file)], remote=data.dvc.remote)
    version = read_data_version(data.dvc_file)
    assert version is not None, "dvc add wrote no pointer file"
    return version


def _no_version_yet(data: DataStore) -> DataVersionError:
    return DataVersionError(
        f"{data.dvc_file} does not exist: no dataset version yet. "
        "Run 'keel ingest --demo' (the workload's demo batches) or 'keel ingest --batch NAME' first."
    )


def require_version(data: DataStore) -> None:
    """Raise now (DataVersionError) when the workspace has no dataset version and no
    interrupted ingest to recover: what ensure_checked_out says inside a flow, said by a
    command before it imports its engines and opens a flow run."""
    if not _journal(data).exists() and read_data_version(data.dvc_file) is None:
        raise _no_version_yet(data)


def ensure_checked_out(data: DataStore) -> DataVersion:
    """Make data/ hold exactly the version data.dvc records: pull it when absent,
    refuse when data/ has changes that data.dvc does not record."""
    from dvc.repo import Repo

    recover_ingest(data)
    version = read_data_version(data.dvc_file)
    rel = data.dir.relative_to(data.workspace)
    if version is None:
        raise _no_version_yet(data)
    configure_remote(data)
    with Repo(str(data.workspace)) as repo:
        if not data.dir.exists():
            try:
                repo.pull(targets=[str(data.dvc_file)], remote=data.dvc.remote)
            except Exception as exc:  # dvc raises its own hierarchy; name what is missing
                raise DataVersionError(
                    f"{rel}/ is absent and version {version.md5} could not be pulled from "
                    f"remote '{data.dvc.remote}' ({data.dvc.remote_url}): {exc}. "
                    f"Re-create it with 'keel ingest'."
                ) from exc
        status = repo.status(targets=[str(data.dvc_file)])
    if status:
        raise DataVersionError(
            f"{rel}/ differs from {data.dvc_file.name} ({status}): record the change with "
            f"'keel ingest' (or 'dvc add {rel}'), or restore it with 'dvc checkout'."
        )
    return version


# ------------------------------------------------------------------ remote and versions
def remote_missing(data: DataStore, md5: str) -> list[str]:
    """What of data version ``md5`` the DVC remote lacks, checked object by object
    against the remote itself (not DVC's cached view of it). Empty list: complete."""
    import json

    from dvc.repo import Repo

    configure_remote(data)
    with Repo(str(data.workspace)) as repo:
        odb = repo.cloud.get_remote_odb(data.dvc.remote)
        if not odb.exists(md5):
            return [f"{md5} (the directory manifest)"]
        entries = json.loads(odb.fs.cat_file(odb.oid_to_path(md5)))
        return [f"{e['relpath']} ({e['md5']})" for e in entries if not odb.exists(e["md5"])]


def require_in_remote(data: DataStore, md5: str) -> None:
    missing = remote_missing(data, md5)
    if missing:
        raise DataVersionError(
            f"data version {md5} is incomplete in DVC remote '{data.dvc.remote}' "
            f"({data.dvc.remote_url}): missing {', '.join(missing)}. Push it again "
            f"('dvc push -r {data.dvc.remote}') from a workspace that has it."
        )


def materialise(data: DataStore, dvc_text: str, target: Path, commit: str = "") -> Path:
    """Re-create a recorded dataset in a new directory under ``target`` from the DVC
    remote alone (an empty cache), and return that directory: the data lies where the
    workspace has it (``data/``, ``data.dvc``).

    With the ``commit`` that holds it, this is exactly what a teammate runs: ``git clone``
    of the workspace, ``git checkout <commit>``, ``dvc pull``; the data.dvc found there
    must record the same md5 as ``dvc_text``. Without one (a version trained before keel
    committed data versions, or with ``dvc.git_commit`` off) a bare DVC repo is made
    around the recorded data.dvc and pulled the same way."""
    from dvc.repo import Repo

    md5 = _pointer_md5(dvc_text)
    if not md5:
        raise DataVersionError("the recorded data.dvc has no outs[0].md5")
    require_in_remote(data, md5)
    rel = data.dvc_file.relative_to(data.workspace)
    target.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ws-", dir=target))  # a fresh one per attempt (retries)
    if commit and _has_commit(data.workspace, commit):
        # the workspace may sit below its repository's top: the clone's copy of it does too
        prefix = _run(["git", "rev-parse", "--show-prefix"], data.workspace)
        top = _run(["git", "rev-parse", "--show-toplevel"], data.workspace)
        _run(["git", "clone", "-q", "--no-checkout", top, str(root)], target)
        _run(["git", "-c", "advice.detachedHead=false", "checkout", "-q", commit], root)
        root = root / prefix
        if not (root / ".dvc" / "config").is_file():
            raise DataVersionError(
                f"commit {commit} has no {prefix}.dvc/config: DVC's configuration is not committed, "
                f"so no clone can 'dvc pull' it (commit .dvc/config, .dvc/.gitignore and .dvcignore)"
            )
        pointer = root / rel
        found = _pointer_md5(pointer.read_text()) if pointer.exists() else None
        if found != md5:
            raise DataVersionError(
                f"commit {commit} holds {rel} with md5 {found}, not the recorded {md5}: "
                f"the model version's lineage and git history disagree"
            )
    else:
        Repo.init(str(root), no_scm=True).close()
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(dvc_text)
    with Repo(str(root)) as repo:
        _sync_remote(repo, data)
        repo.pull(targets=[str(root / rel)], remote=data.dvc.remote)
    return root


def _pointer_md5(dvc_text: str) -> str | None:
    meta = yaml.safe_load(dvc_text) or {}
    md5 = (meta.get("outs") or [{}])[0].get("md5")
    return str(md5) if md5 else None


def _has_commit(ws: Path, commit: str) -> bool:
    return _git(["cat-file", "-e", f"{commit}^{{commit}}"], ws) is not None


def origin(data: DataStore) -> str:
    """Where a teammate clones the workspace from: its git ``origin``, else its path."""
    return _git(["remote", "get-url", "origin"], data.workspace) or str(data.workspace)


# ------------------------------------------------------------------ interrupted ingests
def _journal(data: DataStore) -> Path:
    return data.workspace / ".dvc" / "tmp" / "keel-ingest.json"


def _versions_log(data: DataStore) -> Path:
    return data.workspace / VERSIONS_FILE


@contextlib.contextmanager
def ingest_lock(data: DataStore) -> Iterator[None]:
    """One data-version change at a time per workspace: a second ``keel ingest`` waits
    for the first (up to ``dvc.lock_timeout_s``, then fails naming the holder). Also taken
    by whoever recovers an interrupted ingest, so a live ingest is never "recovered".
    An OS file lock: it dies with its process, SIGKILL included."""
    import fcntl
    import time

    path = data.workspace / ".dvc" / "tmp" / "keel-ingest.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        deadline = time.monotonic() + data.dvc.lock_timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    raise DataVersionError(
                        f"{path}: another ingest ({holder}) has held the workspace's data lock for "
                        f"{data.dvc.lock_timeout_s:.0f} s (dvc.lock_timeout_s); try again when it ends"
                    ) from None
                time.sleep(0.2)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}\n")
            fh.flush()
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def begin_ingest(data: DataStore) -> None:
    """Note the version before an ingest starts changing data/ (see recover_ingest)."""
    import json

    path = _journal(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    before = data.dvc_file.read_text() if data.dvc_file.exists() else None
    log = _versions_log(data)
    versions = log.read_text() if log.exists() else None
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"dvc_file": before, "versions": versions}))
    tmp.replace(path)


def end_ingest(data: DataStore) -> None:
    _journal(data).unlink(missing_ok=True)


def recover_ingest(data: DataStore, *, locked: bool = False) -> bool:
    """If an ingest was killed halfway, put data/, data.dvc and the version log back to
    the version recorded before it; an ingest killed after its git commit is kept.
    Waits for a live ingest to end rather than undoing it (``locked``: the caller holds
    ``ingest_lock`` already). Returns whether anything was recovered."""
    if not _journal(data).exists():
        return False
    if locked:
        return _recover_locked(data)
    with ingest_lock(data):
        return _recover_locked(data)


def _recover_locked(data: DataStore) -> bool:
    import json
    import shutil

    from dvc.repo import Repo

    path = _journal(data)
    if not path.exists():
        return False  # the ingest we waited for ended cleanly
    journal = json.loads(path.read_text())
    before, versions = journal["dvc_file"], journal.get("versions")
    current = data.dvc_file.read_text() if data.dvc_file.exists() else None
    if current is not None and current != before and _committed_text(data, data.dvc_file) == current:
        end_ingest(data)  # killed after its commit: the new version is whole
        return False
    shutil.rmtree(data.dir, ignore_errors=True)
    if before is None:
        data.dvc_file.unlink(missing_ok=True)
    else:
        data.dvc_file.write_text(before)
        with Repo(str(data.workspace)) as repo:
            repo.checkout(targets=[str(data.dvc_file)], force=True)
    if versions is None:
        _versions_log(data).unlink(missing_ok=True)
    elif "versions" in journal:
        _versions_log(data).write_text(versions)
    end_ingest(data)
    return True


# ------------------------------------------------------------------ data versions in git


def _committed_text(data: DataStore, path: Path) -> str | None:
    """``path`` as HEAD has it, or None (no repo, no commit, not tracked). ``HEAD:./<p>``:
    relative to the workspace, which may sit below the repository's top."""
    rel = path.relative_to(data.workspace).as_posix()
    proc = subprocess.run(
        ["git", "show", f"HEAD:./{rel}"], cwd=data.workspace, capture_output=True, text=True
    )
    return proc.stdout if proc.returncode == 0 else None


def _in_git(data: DataStore) -> bool:
    return _git(["rev-parse", "--show-toplevel"], data.workspace) is not None


def owned_files(data: DataStore) -> list[Path]:
    """What keel commits with each data version: the pointer and keel's version log."""
    return [data.dvc_file, _versions_log(data)]


def refuse_uncommitted_pointer(data: DataStore) -> None:
    """A data.dvc that differs from its last commit (a hand edit, a bare `dvc add`) is not
    a version keel made: refuse to build on it rather than commit it by accident."""
    if not (data.dvc.git_commit and _in_git(data) and data.dvc_file.exists()):
        return
    committed = _committed_text(data, data.dvc_file)
    if committed is not None and committed != data.dvc_file.read_text():
        rel = data.dvc_file.relative_to(data.workspace)
        raise DataVersionError(
            f"{data.dvc_file}: has uncommitted changes (rule: keel commits every data version "
            f"itself). Commit them ('git commit {rel}') or discard them ('git checkout -- {rel} "
            f"&& dvc checkout'), then ingest again."
        )


def commit_data_version(data: DataStore, version: DataVersion, added: list[str]) -> str | None:
    """One git commit of data.dvc and the version log, naming the batches and the md5
    (and a ``data/<md5>`` tag when ``dvc.git_tag``). Only these paths are staged and
    committed (``git commit -- <paths>``), so a user's other changes, staged or not, stay
    out. Returns the commit, or None when there is nothing new (identical bytes
    re-ingested), no git repository, or ``dvc.git_commit`` is off."""
    if not (data.dvc.git_commit and _in_git(data)):
        return None
    files = [p.relative_to(data.workspace).as_posix() for p in owned_files(data) if p.exists()]
    changed = _run(["git", "status", "--porcelain", "--", *files], data.workspace)
    if not changed:
        return None
    _run(["git", "add", "--", *files], data.workspace)
    message = f"data: {', '.join(added) or 'no new batch'} (md5 {version.md5})"
    identity = _git_identity(data.workspace)
    # keel's own bookkeeping commit: the user's commit hooks (linters...) are not for it
    _run(["git", *identity, "commit", "-q", "--no-verify", "-m", message, "--", *files], data.workspace)
    sha = _run(["git", "rev-parse", "HEAD"], data.workspace)
    if data.dvc.git_tag:
        _run(["git", *identity, "tag", "-f", f"data/{version.short}", sha], data.workspace)
    return sha


def data_commit(data: DataStore, md5: str) -> str | None:
    """HEAD when its data.dvc records ``md5`` (so `git checkout <it> && dvc pull` restores
    that data), else None (keel's commits are off, or data.dvc was changed since)."""
    committed = _committed_text(data, data.dvc_file)
    if committed is None or data.dvc_file.read_text() != committed:
        return None
    if _pointer_md5(committed) != md5:
        return None
    return _git(["rev-parse", "HEAD"], data.workspace)


def _git_identity(ws: Path) -> list[str]:
    """keel's fallback identity where git has none configured (a CI box, a container)."""
    if _git(["config", "user.email"], ws):
        return []
    return ["-c", "user.name=keel", "-c", "user.email=keel@localhost"]


def record_version(
    data: DataStore, version: DataVersion, partitions: dict[str, int], added: list[str]
) -> None:
    """Append the version and its per-partition row counts to data-versions.jsonl."""
    import json
    import time

    log = _versions_log(data)
    lines = log.read_text().splitlines() if log.exists() else []
    if lines and json.loads(lines[-1])["md5"] == version.md5:
        return  # re-ingesting identical bytes made no new version
    entry = {
        "md5": version.md5,
        "partitions": partitions,
        "added": added,
        "rows": sum(partitions.values()),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with log.open("a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
