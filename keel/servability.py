"""Servability check, run in a fresh process: load a registry URI and predict on rows of
its own input example. ``python -m keel.servability models:/<name>/<v> [rows]``; prints
one JSON line; exit 0 only when the model loaded and predicted."""

from __future__ import annotations

import json
import sys
import time

# Serving and this check load models with MLflow's pickle deserialization off: keel's
# models are models-from-code (the pyfunc is built from keel/pyfunc_entry.py, the weights
# read with torch.load(weights_only=True)), so only a cloudpickled model is refused.
SAFE_LOADING = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}


def check(uri: str, rows: int) -> dict:
    import mlflow
    import pandas as pd
    from mlflow.models import Model

    start = time.perf_counter()
    local = mlflow.artifacts.download_artifacts(uri)
    # suppress_warnings: MLflow's requirements-vs-installed comparison (~2.7 s of package
    # scanning) only logs; a model that cannot load or predict fails below either way
    model = mlflow.pyfunc.load_model(local, suppress_warnings=True)
    example = Model.load(local).load_input_example(local)
    if not isinstance(example, pd.DataFrame):
        raise ValueError(f"{uri} has no input example table to predict on (got {type(example).__name__})")
    signature = Model.load(local).signature
    if signature is None or signature.outputs is None:
        raise ValueError(f"{uri} has no output signature")
    expected = signature.outputs.input_names()
    out = model.predict(example.head(rows))
    if len(out) != min(rows, len(example)) or list(out.columns) != expected:
        raise ValueError(
            f"{uri} predicted {len(out)} rows with columns {list(out.columns)}; its signature says {expected}"
        )
    return {"ok": True, "uri": uri, "rows": len(out), "seconds": round(time.perf_counter() - start, 3)}


def main(argv: list[str]) -> int:
    uri, rows = argv[0], int(argv[1]) if len(argv) > 1 else 5
    try:
        print(json.dumps(check(uri, rows)))
        return 0
    except Exception as exc:  # any failure to load or predict blocks the alias move
        print(json.dumps({"ok": False, "uri": uri, "error": f"{type(exc).__name__}: {exc}"[:2000]}))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
