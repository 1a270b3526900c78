"""What each keel command costs beyond its work: wall time of `keel ingest` (one month),
`keel train` (the demo months, and the `debug` profile), `keel status`, `keel history`,
`keel promote`, `keel serve` start-up and `keel --help`, each against a bare baseline run
in the same round on the same workspace, plus where keel's time goes: import time per
package (``python -X importtime``, self time summed by top-level package), seconds per flow
step (Prefect's own task-run records) and what is left outside both.

Baselines (fresh processes, the same data and store):
- ingest: the workload builds the month and writes its partition (no validation, no DVC/git);
- train: bench/train_overhead.py's bare fit + test metrics (no Prefect, MLflow, GX, DVC);
- status / history: MlflowClient on the same sqlite store reads the aliases' versions;
- promote: MlflowClient moves the alias, then a fresh process loads the version with
  mlflow.pyfunc (the least a promotion with a servability check does);
- serve: `mlflow models serve --env-manager local` on models:/<model>@champion until GET /ping;
- --help: `python -c pass`.

    python bench/command_overhead.py [--rounds 3] [--out bench/results/command_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )
    return seconds, proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until_up(cmd: list[str], env: dict[str, str], url: str, timeout: float = 300) -> float:
    """Seconds from starting a server to its first 200 on ``url``; the server is stopped."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"{' '.join(cmd)} exited ({proc.returncode}) before {url} answered")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"{url} did not answer within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait()


_IMPORT = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def import_seconds(text: str) -> dict[str, float]:
    """``-X importtime`` lines -> self seconds summed by top-level package, largest first."""
    by_pkg: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        m = _IMPORT.match(line)
        if m:
            by_pkg[m.group(4).split(".")[0]] += int(m.group(1)) / 1e6
    return dict(sorted(by_pkg.items(), key=lambda kv: -kv[1]))


def _log_text(ws: Path, command: str, since: float) -> str:
    """The command's log file (keel captures its stderr there once its console is up): the
    newest .keel/logs/<command>-*.log written since the run began."""
    logs = [p for p in (ws / ".keel" / "logs").glob(f"{command}-*.log") if p.stat().st_mtime >= since]
    return max(logs, key=lambda p: p.stat().st_mtime).read_text(errors="replace") if logs else ""


def imports_of(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Import seconds per package of one run of ``cmd`` (a keel command) under -X importtime."""
    assert cmd[:3] == [PY, "-m", "keel.cli"] and cmd[3] == "-w"
    since = time.time() - 1
    _, proc = _run([PY, "-X", "importtime", *cmd[1:]], env)
    command = next((a for a in cmd[5:] if not a.startswith("-")), None)  # None: `keel --help`
    log = _log_text(Path(cmd[4]), command, since) if command else ""
    return import_seconds(proc.stderr + "\n" + log)


def task_seconds(prefect_db: Path, flow: str) -> dict[str, float]:
    """Seconds per task of the newest run of ``flow``, from Prefect's database."""
    with sqlite3.connect(prefect_db) as db:
        row = db.execute(
            "select fr.id, (julianday(fr.end_time) - julianday(fr.start_time)) * 86400 from flow_run fr "
            "join flow f on f.id = fr.flow_id where f.name = ? order by fr.created desc limit 1",
            (flow,),
        ).fetchone()
        if row is None:
            return {}
        rows = db.execute(
            "select task_key, (julianday(end_time) - julianday(start_time)) * 86400 "
            "from task_run where flow_run_id = ? and end_time is not null",
            (row[0],),
        ).fetchall()
    steps: dict[str, float] = defaultdict(float)
    for key, seconds in rows:
        steps[re.sub(r"-[0-9a-f]{6,}$", "", key)] += seconds
    return {"(flow run)": round(row[1], 2), **{k: round(v, 2) for k, v in steps.items()}}


BARE_INGEST = """
import sys
from keel.config.settings import load_settings
from keel.data.partitions import partition_path
from keel.workloads import build
from pathlib import Path
s = load_settings(sys.argv[1])
w = build(s.workload.name, s.workload.target, s.workload.params)
for month, frame in w.build_batches([sys.argv[2]], s.data.sample_rows).items():
    path = partition_path(Path(sys.argv[3]), month)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
"""

BARE_STATUS = """
import sys
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
c = MlflowClient(sys.argv[1], registry_uri=sys.argv[1])
for alias in ("champion", "challenger", "previous"):
    try:
        v = c.get_model_version_by_alias(sys.argv[2], alias)
        c.get_run(v.run_id).data.metrics
    except MlflowException:
        pass
"""

BARE_PROMOTE = """
import subprocess, sys
from mlflow import MlflowClient
uri, name, version = sys.argv[1:4]
MlflowClient(uri, registry_uri=uri).set_registered_model_alias(name, "bench-champion", version)
load = "import mlflow, sys; mlflow.set_tracking_uri(sys.argv[1]); mlflow.pyfunc.load_model(sys.argv[2])"
subprocess.run([sys.executable, "-c", load, uri, f"models:/{name}/{version}"], check=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "command_overhead.json")
    args = ap.parse_args()

    from keel.config.settings import load_settings
    from keel.workloads import init_workspace, load_workload

    root = Path(tempfile.mkdtemp(prefix="keel-bench-commands-"))
    env = {"PREFECT_HOME": str(root / "prefect-home")}
    ws = init_workspace(root / "ws")
    ws_ingest = init_workspace(root / "ws-ingest")  # ingest's months land here, not in train's data
    settings = load_settings(ws)
    name, store = settings.mlflow.model_name, settings.mlflow.tracking_uri
    demo = settings.data.demo_batches or load_workload(settings).demo_batches()
    keel = [PY, "-m", "keel.cli", "-w", str(ws)]
    keel_ingest = [PY, "-m", "keel.cli", "-w", str(ws_ingest)]
    print(f"workspace {ws}: ingest {demo}, train twice (not timed) ...", flush=True)
    _run([*keel, "ingest", "--demo"], env)
    _run([*keel, "train"], env)  # v1: the champion; Prefect's database migrated
    _run([*keel, "train"], env)  # v2: the same data and seed, blessed: the version promote moves to
    next_months = [f"2013-{m:02d}" for m in range(4, 4 + args.rounds)]

    commands: dict[str, tuple[list[str], list[str], dict[str, str]]] = {
        "--help": ([*keel, "--help"], [PY, "-c", "pass"], env),
        "status": ([*keel, "status"], [PY, "-c", BARE_STATUS, store, name], env),
        "history": ([*keel, "history"], [PY, "-c", BARE_STATUS, store, name], env),
        "train (demo)": (
            [*keel, "train"],
            [PY, str(HERE / "train_overhead.py"), "--bare", str(ws)],
            env,
        ),
        "train (debug)": (
            [*keel, "-p", "debug", "train"],
            [PY, str(HERE / "train_overhead.py"), "--profile", "debug", "--bare", str(ws)],
            env,
        ),
    }
    seconds: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"keel": [], "bare": []})
    steps: dict[str, dict[str, float]] = {}
    for r in range(args.rounds):
        for label, (cmd, bare, cenv) in commands.items():
            seconds[label]["keel"].append(_run(cmd, cenv)[0])
            seconds[label]["bare"].append(_run(bare, cenv)[0])
            if label.startswith("train"):
                steps[label] = task_seconds(root / "prefect-home" / "prefect.db", "keel-train")
        # promote: to the version that is not champion, alternating, as a reviewer would
        to = "2" if r % 2 == 0 else "1"
        promote = [*keel, "promote", to, "--reviewer", "bench", "--reason", "bench", "--force"]
        seconds["promote"]["keel"].append(_run(promote, env)[0])
        seconds["promote"]["bare"].append(_run([PY, "-c", BARE_PROMOTE, store, name, to], env)[0])
        # serve start-up: until the server answers
        port = _free_port()
        seconds["serve start-up"]["keel"].append(
            _until_up([*keel, "serve", "--port", str(port)], env, f"http://127.0.0.1:{port}/health")
        )
        port = _free_port()
        mlflow_serve = [
            str(Path(PY).parent / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        serve_env = {  # MLflow starts `uvicorn` by name: the venv's bin on PATH
            **env,
            "MLFLOW_TRACKING_URI": store,
            "MLFLOW_REGISTRY_URI": store,
            "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        seconds["serve start-up"]["bare"].append(
            _until_up(mlflow_serve, serve_env, f"http://127.0.0.1:{port}/ping")
        )
        # ingest one month: a month not yet in the workspace, and the bare build of the same month
        month = next_months[r]
        ingest = [*keel_ingest, "ingest", "--batch", month]
        seconds["ingest (one month)"]["keel"].append(_run(ingest, env)[0])
        steps["ingest (one month)"] = task_seconds(root / "prefect-home" / "prefect.db", "keel-ingest")
        bare_ingest = [PY, "-c", BARE_INGEST, str(ws_ingest), month, str(root / "bare-data")]
        seconds["ingest (one month)"]["bare"].append(_run(bare_ingest, env)[0])
        print(
            f"round {r}: "
            + ", ".join(f"{k} {v['keel'][-1]:.1f}/{v['bare'][-1]:.1f} s" for k, v in seconds.items())
        )

    print("import time per package (one more run of each under -X importtime) ...", flush=True)
    import_runs = {
        "--help": [*keel, "--help"],
        "status": [*keel, "status"],
        "history": [*keel, "history"],
        "train (demo)": [*keel, "train"],
        "promote": [
            *keel,
            "promote",
            "1" if to == "2" else "2",
            "--reviewer",
            "bench",
            "--reason",
            "bench",
            "--force",
        ],
        "ingest (one month)": [
            PY,
            "-m",
            "keel.cli",
            "-w",
            str(ws_ingest),
            "ingest",
            "--batch",
            f"2013-{4 + args.rounds:02d}",
        ],
    }
    imports = {label: imports_of(cmd, env) for label, cmd in import_runs.items()}

    result: dict[str, dict] = {}
    for label, runs in seconds.items():
        keel_s, bare_s = statistics.median(runs["keel"]), statistics.median(runs["bare"])
        pkgs = imports.get(label, {})
        row = {
            "keel_s": round(keel_s, 2),
            "bare_s": round(bare_s, 2),
            "ratio": round(keel_s / bare_s, 2),
            "overhead_share": round((keel_s - bare_s) / keel_s, 3),
            "import_s": round(sum(pkgs.values()), 2) if pkgs else None,
            "imports_top": {k: round(v, 2) for k, v in list(pkgs.items())[:10]},
            "steps_s": steps.get(label, {}),
            "runs": runs,
        }
        flow_s = row["steps_s"].get("(flow run)")
        if flow_s is not None:  # imports, settings, the Prefect server, exit (imports inside a step overlap)
            row["outside_flow_run_s"] = round(keel_s - flow_s, 2)
        result[label] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": args.rounds, "commands": result}, indent=2))
    print(f"{'command':<20}{'keel s':>8}{'bare s':>8}{'ratio':>7}{'share':>7}{'imports':>9}  top imports")
    for label, row in result.items():
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(row["imports_top"].items())[:5])
        imp = f"{row['import_s']:.1f}" if row["import_s"] is not None else "-"
        print(
            f"{label:<20}{row['keel_s']:>8.2f}{row['bare_s']:>8.2f}{row['ratio']:>7.2f}"
            f"{row['overhead_share']:>7.2f}{imp:>9}  {top}"
        )
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
