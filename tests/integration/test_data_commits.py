"""Data versions the DVC way: each accepted ingest is one git commit of data.dvc and the
version log, made with explicit paths; the remote is named in the committed .dvc/config;
two ingests at once serialise. Real git, real DVC, a local remote, in tmp dirs."""

import subprocess
import sys
import textwrap

import pytest

from keel.data.workspace import DataVersionError, read_data_version


@pytest.fixture
def workspace(synthetic):
    """This module's workspaces run the synthetic workload: nothing here is about flights."""
    return synthetic


pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _git(settings, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=settings.workspace, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_init_names_the_remote_in_the_committed_dvc_config_and_a_clone_pulls(workspace, tmp_path):
    from flows.ingest import ingest_flow

    committed = _git(workspace, "show", "HEAD:.dvc/config")
    assert "remote = local" in committed and f"url = {workspace.dvc.remote_url}" in committed
    version = ingest_flow(workspace, ["b01"])
    # settings and the committed config agree: nothing about the remote in config.local
    local = (workspace.workspace / ".dvc" / "config.local").read_text()
    assert "remote" not in local

    mate = tmp_path / "mate"
    subprocess.run(["git", "clone", "-q", str(workspace.workspace), str(mate)], check=True)
    pull = subprocess.run([sys.executable, "-m", "dvc", "pull"], cwd=mate, capture_output=True, text=True)
    assert pull.returncode == 0, pull.stderr
    assert read_data_version(mate / "data.dvc").md5 == version.md5
    theirs = (mate / "data" / "b01.parquet").read_bytes()
    assert theirs == (workspace.data.dir / "b01.parquet").read_bytes()


def test_keel_commits_only_its_own_files_and_refuses_a_hand_edited_pointer(workspace):
    from flows.ingest import ingest_flow

    # a user's unrelated work in progress: one file staged, one modified, one untracked
    (workspace.workspace / "notes.md").write_text("mine\n")
    _git(workspace, "add", "notes.md")
    with (workspace.workspace / "keel.toml").open("a") as fh:
        fh.write("# a local tweak\n")
    (workspace.workspace / "scratch.py").write_text("print(1)\n")

    version = ingest_flow(workspace, ["b01"])
    assert _git(workspace, "log", "-1", "--format=%s") == f"data: b01 (md5 {version.md5})"
    assert sorted(_git(workspace, "show", "--name-only", "--format=", "HEAD").split()) == [
        "data-versions.jsonl",
        "data.dvc",
    ]
    status = sorted(line.strip() for line in _git(workspace, "status", "--porcelain").splitlines())
    assert status == ["?? scratch.py", "A  notes.md", "M keel.toml"]  # all still the user's

    head = _git(workspace, "rev-parse", "HEAD")
    pointer = workspace.dvc_file.read_text()
    workspace.dvc_file.write_text(pointer.replace("nfiles: 1", "nfiles: 7"))
    refused = r"data\.dvc: has uncommitted changes.*git checkout -- data\.dvc"
    with pytest.raises(DataVersionError, match=refused):
        ingest_flow(workspace, ["b02"])
    assert _git(workspace, "rev-parse", "HEAD") == head
    assert not (workspace.data.dir / "b02.parquet").exists()


def test_identical_bytes_make_no_commit_tags_are_optional_and_commits_can_be_off(workspace):
    from flows.ingest import ingest_flow

    v1 = ingest_flow(workspace, ["b01"])
    head = _git(workspace, "rev-parse", "HEAD")
    assert ingest_flow(workspace, ["b01"]) == v1  # re-ingesting the same batch
    assert _git(workspace, "rev-parse", "HEAD") == head

    tagged = workspace.with_overrides({"dvc.git_tag": True})
    v2 = ingest_flow(tagged, ["b02"])
    assert _git(workspace, "rev-parse", f"data/{v2.short}^{{commit}}") == _git(workspace, "rev-parse", "HEAD")

    off = workspace.with_overrides({"dvc.git_commit": False})
    before = _git(workspace, "rev-parse", "HEAD")
    ingest_flow(off, ["b03"])
    assert _git(workspace, "rev-parse", "HEAD") == before
    assert "data.dvc" in _git(workspace, "status", "--porcelain")


CONCURRENT = textwrap.dedent(
    """
    import sys
    from keel.config.settings import load_settings
    from tasks.data import build_batches, commit_batches
    s = load_settings(sys.argv[1], profile="test", environ={})
    batches = build_batches.fn(s.workload, s.data_store, s.data.sample_rows, [sys.argv[2]], {})
    print(commit_batches.fn(s.data_store, batches).md5)
    """
)


def test_two_concurrent_ingests_serialise_into_two_commits(workspace):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(workspace.workspace), batch],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch in ("b01", "b02")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]

    subjects = _git(workspace, "log", "--format=%s", "--", "data.dvc").splitlines()
    assert len(subjects) == 2 and {s.split(" (")[0] for s in subjects} == {"data: b01", "data: b02"}
    # the later commit holds both partitions, and it is what data.dvc and the log say now
    final = read_data_version(workspace.dvc_file)
    assert final.files == 2 and subjects[0].endswith(f"(md5 {final.md5})")
    assert final.md5 in [out.split()[-1] for out, _ in outs]  # the ingest that went second
    log = (workspace.workspace / "data-versions.jsonl").read_text().splitlines()
    assert len(log) == 2
    assert _git(workspace, "status", "--porcelain", "--untracked-files=no") == ""
    assert not (workspace.workspace / ".dvc" / "tmp" / "keel-ingest.json").exists()


def test_a_workspace_below_its_repositorys_top_commits_and_replays_by_its_prefix(tmp_path):
    from dvc.repo import Repo

    from flows.ingest import ingest_flow
    from keel.config.settings import load_settings
    from keel.data.workspace import data_commit, materialise

    mono = tmp_path / "mono"
    (mono / "ml").mkdir(parents=True)
    ident = ["-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=mono, check=True)
    Repo.init(str(mono / "ml"), subdir=True).close()
    (mono / "ml" / "keel.toml").write_text('[workload]\nname = "synthetic"\n')
    subprocess.run(["git", "add", "ml"], cwd=mono, check=True)
    subprocess.run(["git", *ident, "commit", "-qm", "team repo with an ml/ workspace"], cwd=mono, check=True)
    settings = load_settings(mono / "ml", profile="test", environ={})

    version = ingest_flow(settings, ["b01"])
    shown = subprocess.run(
        ["git", "show", "--name-only", "--format=%s", "HEAD"], cwd=mono, capture_output=True, text=True
    ).stdout.split()
    assert shown[-2:] == ["ml/data-versions.jsonl", "ml/data.dvc"]
    commit = data_commit(settings.data_store, version.md5)
    assert commit == _git(settings, "rev-parse", "HEAD")
    root = materialise(settings.data_store, settings.dvc_file.read_text(), tmp_path / "scratch", commit)
    assert root.name == "ml" and read_data_version(root / "data.dvc").md5 == version.md5
    assert (root / "data" / "b01.parquet").read_bytes() == (settings.data.dir / "b01.parquet").read_bytes()
