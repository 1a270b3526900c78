"""What a registered model carries besides its artifacts: its code and its requirements.

The code is keel's model runtime (``keel.model.runtime``) and every keel module it imports,
found by reading their import statements (``TYPE_CHECKING`` imports left out), copied into a
``keel`` package of its own: the families, the preprocessing, the objectives, and nothing
of the platform (no CLI, servers, flows or training). MLflow puts that directory first on
``sys.path`` when it loads the model, so a fresh process with no keel installed loads and
serves it (the import contract in pyproject.toml keeps the runtime's imports that narrow).
A team's own network family (``[model] target``) travels too: its top-level package is
copied beside ``keel``, and its identity (a content hash, the git commit) goes into lineage.
The requirements are pinned to what is installed (explicit: MLflow's inference takes 9-15 s).
"""

from __future__ import annotations

import ast
import shutil
import warnings
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from keel.config.settings import MlflowStore
from keel.registry import tracking

RUNTIME = "keel.model.runtime"
# What a serving environment needs to load a keel model, beyond a family's own (bert: its tokenizer).
RUNTIME_DISTRIBUTIONS = ("mlflow", "torch", "pandas", "numpy", "pyarrow", "cloudpickle")


def _keel_root() -> Path:
    import keel

    return Path(keel.__file__).parent


def _file(module: str, root: Path) -> Path | None:
    """The source file of keel module ``module`` (a package: its __init__.py), if any."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    if base.is_dir() and (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _runtime_imports(tree: ast.AST) -> set[str]:
    """The keel modules a module's code imports (``from keel.x import y``: keel.x, and
    keel.x.y when y is a module), outside ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for other in node.orelse:
                visit(other)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "keel")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "keel":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def runtime_modules(root: Path | None = None) -> dict[str, Path]:
    """Every keel module a registered model runs: the runtime package's modules and, through
    their imports, transitively, each keel module (and its parent packages) they need."""
    root = root or _keel_root()
    runtime_dir = root.joinpath(*RUNTIME.split(".")[1:])
    todo = [
        RUNTIME,
        *(f"{RUNTIME}.{p.stem}" for p in sorted(runtime_dir.glob("*.py")) if p.stem != "__init__"),
    ]
    found: dict[str, Path] = {}
    while todo:
        module = todo.pop()
        path = _file(module, root)
        if module in found or path is None:
            continue  # a name imported from a module, not a module
        found[module] = path
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        todo += [p for p in parents if p not in found]
        todo += sorted(_runtime_imports(ast.parse(path.read_text())) - found.keys())
    return found


def stage_code(directory: Path) -> Path:
    """``directory``/keel: the model's code, as a package of its own (what ``runtime_modules``
    finds, at the same paths)."""
    root = _keel_root()
    package = directory / "keel"
    for path in runtime_modules(root).values():
        target = package / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return package


def family_code(family: Any) -> Path | None:
    """The code a team's family lives in: its top-level package's directory, or its module's
    file; None for keel's own families (the runtime carries them) and for none."""
    import sys

    if family is None or type(family).__module__.split(".")[0] == "keel":
        return None
    top = type(family).__module__.split(".")[0]
    module = sys.modules[top]
    paths = list(getattr(module, "__path__", []))
    return Path(paths[0]) if paths else Path(str(module.__file__))


def _code_files(code: Path) -> list[Path]:
    if code.is_file():
        return [code]
    files = (p for p in code.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return sorted(p for p in files if p.suffix != ".pyc")


def code_identity(family: Any) -> dict[str, str]:
    """A team's family as lineage records it (the version tags ``model.<key>``, which replay
    compares): ``target``, where its class lives; ``code_sha256``, of its code's files
    (relative paths and bytes, in order); ``code_git``, the commit of the repository holding
    it (``+dirty`` with uncommitted changes there; "" outside git). ``{}`` for keel's own."""
    import hashlib
    import subprocess

    code = family_code(family)
    if code is None:
        return {}
    digest = hashlib.sha256()
    base = code.parent
    for path in _code_files(code):
        digest.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    where = code if code.is_dir() else code.parent

    def git(*args: str) -> str | None:
        proc = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD") or ""
    if commit and git("status", "--porcelain", "--", str(code)):
        commit += "+dirty"
    cls = type(family)
    return {
        "target": f"{cls.__module__}:{cls.__qualname__}",
        "code_sha256": digest.hexdigest(),
        "code_git": commit,
    }


def stage_family_code(code: Path, directory: Path) -> Path:
    """A copy of a team's code (``family_code``) under ``directory``, without caches."""
    target = directory / code.name
    if code.is_file():
        shutil.copy2(code, target)
        return target
    for path in _code_files(code):
        dest = target / path.relative_to(code)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    return target


def log_pyfunc(
    store: MlflowStore,
    run_id: str,
    entry: str,
    artifacts: dict[str, str],
    example: Any,
    output: Any,
    extra_requirements: tuple[str, ...] = (),
    family: Any = None,
) -> Any:
    """Log a keel pyfunc into the run: models-from-code (``keel/model/runtime/<entry>``
    builds it from ``artifacts``), the staged runtime as its code (and a team's family's own
    package beside it), its signature, input example and pinned requirements."""
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        # integer features stay "long" on purpose: MLflow then coerces serving input to
        # int, which keeps categorical codes such as month=1 exact
        warnings.filterwarnings("ignore", message=".*integer column")
        signature = infer_signature(example, output)
    team = family_code(family)
    needed = (*RUNTIME_DISTRIBUTIONS, *extra_requirements, *getattr(family, "requirements", ()))
    tracking.use_tracking(store)
    entry_file = _keel_root().joinpath(*RUNTIME.split(".")[1:], entry)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        code = [stage_code(Path(tmp))]
        if team is not None:
            code.append(stage_family_code(team, Path(tmp)))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(entry_file),
            artifacts=artifacts,
            code_paths=[str(c) for c in code],
            signature=signature,
            input_example=example,
            pip_requirements=[f"{d}=={dist_version(d)}" for d in dict.fromkeys(needed)],
        )
