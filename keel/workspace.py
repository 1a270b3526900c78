"""The workspace edge: git, DVC and the directory layout.

Every function here takes explicit paths/settings and is called from a task or
the CLI; nothing runs at import time.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from keel.errors import KeelError
from keel.settings import WORKSPACE_FILE, Settings

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
# keel workspace settings. Keys and defaults: keel/conf/defaults.toml.
# Environment variables KEEL_<SECTION>__<KEY> override this file.

[mlflow]
experiment = "keel-flight-delay"
model_name = "flight-delay"

[dvc]
remote = "local"
remote_url = "dvc-remote"
"""


CACHE_TYPES = "reflink,hardlink,copy"


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


def init_workspace(directory: Path) -> Path:
    """Make ``directory`` a ready keel workspace (idempotent): git, DVC, local remote,
    MLflow store dir and a default keel.toml."""
    from dvc.repo import Repo

    ws = Path(directory).expanduser().resolve()
    ws.mkdir(parents=True, exist_ok=True)
    if not (ws / ".git").exists():
        _run(["git", "init", "-q"], ws)
    if not (ws / ".dvc").exists():
        Repo.init(str(ws)).close()
    with Repo(str(ws)) as repo, repo.config.edit("repo") as conf:
        # keel only ever replaces partitions atomically (new inode), so linking the
        # cache is safe; it makes `dvc add` ~2x faster than copying (bench/)
        conf["cache"].setdefault("type", CACHE_TYPES)
    if not (ws / WORKSPACE_FILE).exists():
        (ws / WORKSPACE_FILE).write_text(WORKSPACE_TEMPLATE)
    (ws / "mlflow").mkdir(exist_ok=True)
    (ws / "mlflow" / ".gitignore").write_text("*\n!.gitignore\n")
    _append_missing(ws / ".gitignore", GITIGNORE_LINES)
    _first_commit(ws)
    return ws


# What `keel init` writes and commits; nothing else of the directory is staged.
INIT_FILES = (
    WORKSPACE_FILE,
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "mlflow/.gitignore",
)


def _first_commit(ws: Path) -> None:
    """A new repository gets one commit of keel's own files, so every version records a
    real git sha. A repository that already has commits is left alone."""
    has_head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=ws, capture_output=True)
    if has_head.returncode == 0:
        return
    files = [f for f in INIT_FILES if (ws / f).exists()]
    _run(["git", "add", "--", *files], ws)
    identity = []
    if not subprocess.run(["git", "config", "user.email"], cwd=ws, capture_output=True).stdout.strip():
        identity = ["-c", "user.name=keel", "-c", "user.email=keel@localhost"]  # no git identity set
    message = "keel init: settings, DVC and MLflow layout"
    _run(["git", *identity, "commit", "-q", "-m", message, "--", *files], ws)


def configure_remote(settings: Settings) -> None:
    """Point the DVC remote named in settings at its URL (``.dvc/config.local``, untracked),
    creating a local remote directory when the URL is a path; hash with every core."""
    from dvc.repo import Repo

    url = settings.dvc.remote_url
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
    with Repo(str(settings.workspace)) as repo, repo.config.edit("local") as conf:
        conf["remote"][settings.dvc.remote] = remote_config(settings)
        conf["core"]["remote"] = settings.dvc.remote
        conf["core"]["checksum_jobs"] = os.cpu_count() or 1


def remote_config(settings: Settings) -> dict[str, str]:
    """The DVC remote's section: its URL, and the endpoint of an S3-compatible store.
    Credentials are never written: DVC takes them from AWS_* environment variables."""
    conf = {"url": settings.dvc.remote_url}
    if settings.dvc.endpoint_url:
        conf["endpointurl"] = settings.dvc.endpoint_url
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


def add_and_push(settings: Settings) -> DataVersion:
    """``dvc add data`` then ``dvc push`` of that version to the configured remote."""
    from dvc.repo import Repo

    configure_remote(settings)
    with Repo(str(settings.workspace)) as repo:
        repo.add(str(settings.data.dir))
        repo.push(targets=[str(settings.dvc_file)], remote=settings.dvc.remote)
    version = read_data_version(settings.dvc_file)
    assert version is not None, "dvc add wrote no pointer file"
    return version


def ensure_checked_out(settings: Settings) -> DataVersion:
    """Make data/ hold exactly the version data.dvc records: pull it when absent,
    refuse when data/ has changes that data.dvc does not record."""
    from dvc.repo import Repo

    recover_ingest(settings)
    version = read_data_version(settings.dvc_file)
    rel = settings.data.dir.relative_to(settings.workspace)
    if version is None:
        raise DataVersionError(
            f"{settings.dvc_file} does not exist: no dataset version yet. "
            f"Run 'keel ingest --month 2013-01' first."
        )
    configure_remote(settings)
    with Repo(str(settings.workspace)) as repo:
        if not settings.data.dir.exists():
            try:
                repo.pull(targets=[str(settings.dvc_file)], remote=settings.dvc.remote)
            except Exception as exc:  # dvc raises its own hierarchy; name what is missing
                raise DataVersionError(
                    f"{rel}/ is absent and version {version.md5} could not be pulled from "
                    f"remote '{settings.dvc.remote}' ({settings.dvc.remote_url}): {exc}. "
                    f"Re-create it with 'keel ingest'."
                ) from exc
        status = repo.status(targets=[str(settings.dvc_file)])
    if status:
        raise DataVersionError(
            f"{rel}/ differs from {settings.dvc_file.name} ({status}): record the change with "
            f"'keel ingest' (or 'dvc add {rel}'), or restore it with 'dvc checkout'."
        )
    return version


# ------------------------------------------------------------------ remote and versions
def remote_missing(settings: Settings, md5: str) -> list[str]:
    """What of data version ``md5`` the DVC remote lacks, checked object by object
    against the remote itself (not DVC's cached view of it). Empty list: complete."""
    import json

    from dvc.repo import Repo

    configure_remote(settings)
    with Repo(str(settings.workspace)) as repo:
        odb = repo.cloud.get_remote_odb(settings.dvc.remote)
        if not odb.exists(md5):
            return [f"{md5} (the directory manifest)"]
        entries = json.loads(odb.fs.cat_file(odb.oid_to_path(md5)))
        return [f"{e['relpath']} ({e['md5']})" for e in entries if not odb.exists(e["md5"])]


def require_in_remote(settings: Settings, md5: str) -> None:
    missing = remote_missing(settings, md5)
    if missing:
        raise DataVersionError(
            f"data version {md5} is incomplete in DVC remote '{settings.dvc.remote}' "
            f"({settings.dvc.remote_url}): missing {', '.join(missing)}. Push it again "
            f"('dvc push -r {settings.dvc.remote}') from a workspace that has it."
        )


def materialise(settings: Settings, dvc_text: str, target: Path) -> Path:
    """Re-create the dataset that ``dvc_text`` (a data.dvc) records, in a new DVC repo at
    ``target``, from the remote alone (its own empty cache). Returns ``target/data``."""
    from dvc.repo import Repo

    meta = yaml.safe_load(dvc_text) or {}
    md5 = (meta.get("outs") or [{}])[0].get("md5")
    if not md5:
        raise DataVersionError("the recorded data.dvc has no outs[0].md5")
    require_in_remote(settings, md5)
    target.mkdir(parents=True, exist_ok=True)
    Repo.init(str(target), no_scm=True).close()
    (target / "data.dvc").write_text(dvc_text)
    with Repo(str(target)) as repo:
        with repo.config.edit("local") as conf:
            conf["remote"][settings.dvc.remote] = remote_config(settings)
            conf["core"]["remote"] = settings.dvc.remote
        repo.pull(targets=[str(target / "data.dvc")], remote=settings.dvc.remote)
    return target / "data"


# ------------------------------------------------------------------ interrupted ingests
def _journal(settings: Settings) -> Path:
    return settings.workspace / ".dvc" / "tmp" / "keel-ingest.json"


def begin_ingest(settings: Settings) -> None:
    """Note the version before an ingest starts changing data/ (see recover_ingest)."""
    import json

    path = _journal(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    before = settings.dvc_file.read_text() if settings.dvc_file.exists() else None
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"dvc_file": before}))
    tmp.replace(path)


def end_ingest(settings: Settings) -> None:
    _journal(settings).unlink(missing_ok=True)


def recover_ingest(settings: Settings) -> bool:
    """If an ingest was killed halfway, put data/ and data.dvc back to the version
    recorded before it. Returns whether anything was recovered."""
    import json
    import shutil

    from dvc.repo import Repo

    path = _journal(settings)
    if not path.exists():
        return False
    before = json.loads(path.read_text())["dvc_file"]
    shutil.rmtree(settings.data.dir, ignore_errors=True)
    if before is None:
        settings.dvc_file.unlink(missing_ok=True)
    else:
        settings.dvc_file.write_text(before)
        with Repo(str(settings.workspace)) as repo:
            repo.checkout(targets=[str(settings.dvc_file)], force=True)
    end_ingest(settings)
    return True


def record_version(
    settings: Settings, version: DataVersion, partitions: dict[str, int], added: list[str]
) -> None:
    """Append the version and its per-partition row counts to data-versions.jsonl."""
    import json
    import time

    log = settings.workspace / "data-versions.jsonl"
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
