"""Online serving that follows the ``champion`` alias, with hot swap.

A request takes one reference to the current model and finishes on it; a watcher
thread loads a new champion, checks it on its input example, then swaps the
reference. A version that fails to load or predict never replaces the one serving.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from keel.config.settings import MlflowStore, Settings

log = logging.getLogger("keel.serve")


class RequestError(ValueError):
    """A request the model cannot score; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LoadedModel:
    version: str
    data_version: str
    model: Any  # keel.model.runtime.pyfunc.TabularModel, context loaded
    columns: dict[str, str]  # input name -> MLflow type ("string", "long", "double")
    required: frozenset[str]
    vocab: dict[str, frozenset[str]]  # known categories per categorical input
    loaded_at: float
    outputs: dict[str, str]  # output name -> MLflow type, from the model's signature
    text: dict[str, int] = field(default_factory=dict)  # free-text input -> most characters allowed

    def records(self, out: pd.DataFrame) -> list[dict[str, Any]]:
        """Predictions as JSON-ready dicts, one per row, in the signature's output columns."""
        names = list(self.outputs)
        values = [out[name].tolist() for name in names]
        return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.model.predict(None, frame)


def load_version(store: MlflowStore, version: str) -> LoadedModel:
    """Load ``models:/<name>/<version>`` and prove it predicts on its input example."""
    import mlflow
    from mlflow.models import Model

    from keel.registry import tracking

    tracking.use_tracking(store)
    local = mlflow.artifacts.download_artifacts(f"models:/{store.mlflow.model_name}/{version}")
    pyfunc = tracking.load_pyfunc(store, local)
    schema = pyfunc.metadata.get_input_schema()
    columns = {c.name: str(c.type.name if hasattr(c.type, "name") else c.type) for c in schema.inputs}
    required = frozenset(c.name for c in schema.inputs if c.required)
    out_schema = pyfunc.metadata.get_output_schema()
    if out_schema is None:
        raise RuntimeError(f"v{version} has no output signature: keel reads its output columns from it")
    outputs = {c.name: str(c.type.name if hasattr(c.type, "name") else c.type) for c in out_schema.inputs}
    inner = pyfunc.unwrap_python_model()
    vocab = {k: frozenset(v) for k, v in getattr(inner.preprocessor, "vocab", {}).items()}
    loaded = LoadedModel(
        version=str(version),
        data_version="",
        model=inner,
        columns=columns,
        required=required,
        vocab=vocab,
        loaded_at=time.time(),
        outputs=outputs,
        text=dict(getattr(inner.preprocessor, "text_limits", {})),
    )
    example = Model.load(local).load_input_example(local)
    if not isinstance(example, pd.DataFrame):
        raise RuntimeError(f"v{version} has no input example table (got {type(example).__name__})")
    out = loaded.predict(frame_from_records(loaded, example.head(3).to_dict("records")))
    if len(out) != min(3, len(example)) or list(out.columns) != list(outputs):
        raise RuntimeError(
            f"v{version} predicted {len(out)} rows with columns {list(out.columns)} for its input "
            f"example; its signature says {list(outputs)}"
        )
    mv = tracking.client(store).get_model_version(store.mlflow.model_name, str(version))
    return LoadedModel(**{**loaded.__dict__, "data_version": (mv.tags or {}).get("data_version", "")})


def frame_from_records(loaded: LoadedModel, records: Any) -> pd.DataFrame:
    """Validate JSON records against the model's signature and vocabularies; raise
    RequestError naming the record and the field."""
    if not isinstance(records, list):
        raise RequestError('body must be a JSON object {"records": [...]} or a list of records', 400)
    if not records:
        raise RequestError("no records to score", 400)
    vocab = loaded.vocab
    columns: dict[str, list] = {name: [] for name in loaded.columns}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RequestError(f"record {i}: must be a JSON object, got {type(record).__name__}")
        missing = [n for n in loaded.required if n not in record]
        if missing:
            raise RequestError(f"record {i}: missing field(s) {sorted(missing)}")
        for name, kind in loaded.columns.items():
            value = record.get(name)
            if name in loaded.text:
                columns[name].append(text_value(i, name, value, loaded.text[name]))
                continue
            if kind == "string":
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    value = None  # a missing category: the model encodes it as unknown
                elif not isinstance(value, str):
                    raise RequestError(f"record {i}: field '{name}' must be a string, got {value!r}")
                if value is not None and name in vocab and value not in vocab[name]:
                    raise RequestError(f"record {i}: field '{name}': unknown category {value!r}")
            elif kind in ("long", "integer"):
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or (isinstance(value, float) and not value.is_integer())
                ):
                    raise RequestError(f"record {i}: field '{name}' must be an integer, got {value!r}")
                value = int(value)
                if name in vocab and str(value) not in vocab[name]:
                    raise RequestError(f"record {i}: field '{name}': unknown category {value!r}")
            else:  # double/float: null allowed (the model imputes it)
                if value is None:
                    value = math.nan
                elif isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise RequestError(f"record {i}: field '{name}' must be a number or null, got {value!r}")
            columns[name].append(value)
    return pd.DataFrame(
        {
            n: (np.asarray(v, dtype=np.float64) if loaded.columns[n] in ("double", "float") else v)
            for n, v in columns.items()
        }
    )


def text_value(i: int, name: str, value: Any, limit: int) -> str:
    """A free-text field: a string with some non-blank text, at most ``limit`` characters."""
    if not isinstance(value, str):
        raise RequestError(f"record {i}: field '{name}' must be a string of text, got {value!r}"[:300])
    if not value.strip():
        raise RequestError(f"record {i}: field '{name}' is empty")
    if len(value) > limit:
        raise RequestError(f"record {i}: field '{name}' has {len(value)} characters, more than {limit}")
    return value


class ModelHolder:
    """The model serving now; swapped whole, never mutated."""

    def __init__(self, loaded: LoadedModel):
        self._current = loaded
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedModel:
        return self._current  # one atomic read: a request keeps this object to the end

    def swap(self, loaded: LoadedModel) -> None:
        self._current = loaded


class AliasWatcher(threading.Thread):
    """Poll the champion alias (under enforce: the ledger's attested one); load, check and
    swap in a new version."""

    def __init__(self, settings: Settings, holder: ModelHolder, poll_s: float, shadow: Any = None):
        super().__init__(name="keel-alias-watcher", daemon=True)
        self.settings, self.holder, self.poll_s = settings, holder, poll_s
        self.shadow = shadow  # keel.serving.shadow.Shadow: also follow @challenger for it
        self.stopped = threading.Event()
        self.failed: dict[str, str] = {}
        self._seen: tuple[str, int] | None = None  # (champion alias, ledger entries) last verified

    def _try(self, call) -> None:
        try:
            call()
        except Exception as exc:  # registry unreachable: keep serving what we have
            log.warning("alias lookup failed: %s", exc)

    def champion(self) -> str | None:
        """The alias; under ``[promotion] enforce`` the champion the verified ledger attests
        (an out-of-band move is reverted, a broken ledger keeps the one serving)."""
        from keel.registry import tracking

        if not self.settings.promotion.enforce:
            return tracking.current_alias_version(self.settings.mlflow_store, "champion")
        from keel.registry.promotion import LEDGER_TAG, attested_champion

        model = tracking.client(self.settings.mlflow_store).get_registered_model(
            self.settings.mlflow.model_name
        )
        seen = (
            str((model.aliases or {}).get("champion")),
            sum(k.startswith(LEDGER_TAG) for k in model.tags or {}),
        )
        if seen == self._seen:  # neither the alias nor the ledger changed: nothing to verify
            return self.holder.current.version
        version, why = attested_champion(self.settings.mlflow_store, self.settings.promotion)
        self._seen = seen if version else None
        if version is None:
            raise RuntimeError(f"not swapping: {why}")
        return version

    def follow_challenger(self) -> None:
        """Shadow scoring: load the version @challenger points at, when it changes."""
        from keel.registry import tracking

        version = tracking.current_alias_version(self.settings.mlflow_store, "challenger")
        current = self.shadow.challenger
        if version is None or (current is not None and current.version == version) or version in self.failed:
            return
        try:
            self.shadow.set_challenger(load_version(self.settings.mlflow_store, version))
            log.warning("shadow: scoring challenger v%s beside the champion", version)
        except Exception as exc:
            self.failed[version] = f"{type(exc).__name__}: {exc}"
            log.error("shadow: challenger v%s failed to load: %s", version, exc)

    def run(self) -> None:
        if self.shadow is not None:
            self._try(self.follow_challenger)
        while not self.stopped.wait(self.poll_s):
            if self.shadow is not None:
                self._try(self.follow_challenger)
            try:
                version = self.champion()
            except Exception as exc:  # registry unreachable: keep serving what we have
                self.holder.last_error = f"alias lookup failed: {exc}"
                log.warning(self.holder.last_error)
                continue
            if version is None or version == self.holder.current.version or version in self.failed:
                continue
            try:
                loaded = load_version(self.settings.mlflow_store, version)
            except Exception as exc:
                self.failed[version] = f"{type(exc).__name__}: {exc}"
                self.holder.last_error = (
                    f"v{version} failed to load; still serving v{self.holder.current.version}: {exc}"
                )
                log.error(self.holder.last_error)
                continue
            old = self.holder.current.version
            self.holder.swap(loaded)
            self.holder.last_error = None
            log.warning("swapped champion v%s -> v%s", old, loaded.version)


def create_app(settings: Settings, holder: ModelHolder, shadow: Any = None) -> FastAPI:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if (
            shadow is not None
        ):  # on shutdown (uvicorn re-raises SIGTERM after it): what the last requests showed
            shadow.stopped.set()
            shadow.flush()

    app = FastAPI(
        title="keel", description=f"serves models:/{settings.mlflow.model_name}@champion", lifespan=lifespan
    )
    limit = settings.serve.max_body_bytes

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model_version": holder.current.version, "last_error": holder.last_error}

    @app.get("/version")
    def version() -> dict:
        m = holder.current
        return {
            "model": settings.mlflow.model_name,
            "model_version": m.version,
            "data_version": m.data_version,
            "loaded_at": m.loaded_at,
        }

    @app.get("/shadow")
    def shadow_stats() -> dict:
        """Shadow scoring (keel serve --shadow): the challenger beside the champion, live."""
        if shadow is None:
            return {"enabled": False, "pairs": []}
        challenger = shadow.challenger
        return {
            "enabled": True,
            "challenger": None if challenger is None else challenger.version,
            "pairs": shadow.snapshot(),
        }

    async def read_frame(request: Request, model: LoadedModel, max_records: int) -> Any:
        """The request's records as a frame validated against ``model`` (its signature and
        vocabularies), or the JSONResponse that refuses them (400, 413, 422)."""
        chunks, size = [], 0
        async for chunk in request.stream():  # keep at most `limit` bytes; drain the rest
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
        if size > limit:
            return JSONResponse({"error": f"payload of {size} bytes exceeds {limit}"}, status_code=413)
        body = b"".join(chunks)
        if not body.strip():
            return JSONResponse({"error": "empty body"}, status_code=400)
        import json

        try:
            payload = json.loads(body)
        except json.JSONDecodeError as exc:
            return JSONResponse({"error": f"body is not JSON: {exc}"}, status_code=400)
        records = payload.get("records") if isinstance(payload, dict) else payload
        if isinstance(records, list) and len(records) > max_records:
            return JSONResponse({"error": f"{len(records)} records exceed {max_records}"}, status_code=413)
        try:
            return frame_from_records(model, records)
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.post("/predict")
    async def predict(request: Request):
        model = holder.current  # this request finishes on this model, whatever swaps meanwhile
        frame = await read_frame(request, model, settings.serve.max_records)
        if isinstance(frame, JSONResponse):
            return frame
        start = time.perf_counter()
        out = model.predict(frame)
        if shadow is not None:  # the challenger scores it later, on another thread
            shadow.submit(model, frame, out, (time.perf_counter() - start) * 1000)
        return {
            "model_version": model.version,
            "predictions": model.records(out),
        }

    @app.post("/explain")
    async def explain(request: Request):
        """Per-record attributions (keel.model.explain) for records validated as /predict validates
        them, beside their predictions; at most [explain] max_records per request."""
        from starlette.concurrency import run_in_threadpool

        from keel.model.explain import WHY, attribute, method_for

        model = holder.current
        inner = model.model
        method = method_for(inner.family, inner.net) if hasattr(inner, "net") else None
        if method not in ("ablation", "saliency", "tokens"):
            if not hasattr(inner, "net"):
                what = "a compressed variant (an ONNX graph): explain its source version"
            elif method is None:
                what = "a per-token tagger"
            else:
                what = f"explained by {method} only ({WHY[method]})"
            error = f"v{model.version} is {what}: no per-record explanation"
            return JSONResponse({"error": error}, status_code=409)
        frame = await read_frame(request, model, settings.explain.max_records)
        if isinstance(frame, JSONResponse):
            return frame
        out = model.predict(frame)
        # gradients and ablations take a while: off the event loop, so /predict keeps answering
        explained = await run_in_threadpool(
            attribute, inner.family, inner.preprocessor, inner.net, inner.objective, frame
        )
        return {
            "model_version": model.version,
            "method": method,
            "why": WHY[method],
            "predictions": model.records(out),
            "explanations": explained,
        }

    return app
