"""Batch scoring in chunks: files larger than memory, bad rows reported by number."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keel.errors import InputError
from keel.serving.server import LoadedModel


def iter_chunks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            yield batch.to_pandas()
    elif path.suffix == ".csv":
        yield from pd.read_csv(path, chunksize=rows, dtype=str, keep_default_na=False, na_values=[""])
    else:
        raise InputError(f"{path}: input must be .parquet or .csv")


def validate_chunk(loaded: LoadedModel, chunk: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """(typed frame of the model's inputs, per-row error message or '')."""
    errors = np.full(len(chunk), "", dtype=object)

    def flag(mask: np.ndarray, message) -> None:
        for i in np.flatnonzero(mask & (errors == "")):
            errors[i] = message(i) if callable(message) else message

    typed = {}
    for name, kind in loaded.columns.items():
        if name not in chunk:
            flag(np.ones(len(chunk), bool), f"missing column '{name}'")
            typed[name] = np.full(len(chunk), np.nan) if kind not in ("string",) else [""] * len(chunk)
            continue
        raw = chunk[name]
        if kind == "string":
            values = raw.astype(object)
            bad = values.isna().to_numpy()
            flag(bad, f"field '{name}' is null")
            if name in loaded.vocab:
                unknown = ~values.isin(loaded.vocab[name]).to_numpy() & ~bad
                flag(unknown, lambda i, v=values, n=name: f"field '{n}': unknown category {v.iloc[i]!r}")
            typed[name] = values.fillna("").astype(str).to_numpy()
            continue
        number = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        not_number = np.isnan(number) & raw.notna().to_numpy()
        flag(not_number, lambda i, r=raw, n=name: f"field '{n}': not a number: {r.iloc[i]!r}")
        if kind in ("long", "integer"):
            bad = np.isnan(number) | (np.mod(np.nan_to_num(number), 1) != 0)
            flag(bad, f"field '{name}' must be an integer")
            ints = np.nan_to_num(number).astype(np.int64)
            if name in loaded.vocab:
                unknown = ~pd.Series(ints.astype(str)).isin(loaded.vocab[name]).to_numpy() & ~bad
                flag(unknown, lambda i, v=ints, n=name: f"field '{n}': unknown category {int(v[i])}")
            typed[name] = ints
        else:
            typed[name] = number
    return pd.DataFrame(typed), errors


def score_chunk(loaded: LoadedModel, chunk: pd.DataFrame, first_row: int) -> pd.DataFrame:
    """The signature's output columns for every row; empty (NaN / NA) where the row was
    refused, with the reason in ``error``."""
    frame, errors = validate_chunk(loaded, chunk)
    good = errors == ""
    columns: dict[str, Any] = {}
    for name, kind in loaded.outputs.items():
        if kind in ("long", "integer"):
            columns[name] = pd.array([pd.NA] * len(chunk), dtype="Int64")
        elif kind in ("double", "float"):
            columns[name] = np.full(len(chunk), np.nan)
        else:
            columns[name] = pd.array([pd.NA] * len(chunk), dtype="object")
    if good.any():
        out = loaded.predict(frame[good].reset_index(drop=True))
        for name in loaded.outputs:
            columns[name][good] = out[name].to_numpy()
    return pd.DataFrame(
        {
            "row": np.arange(first_row, first_row + len(chunk)),
            **columns,
            "model_version": loaded.version,
            "error": pd.array(errors, dtype="str").astype(object),
        }
    )


def score_file(loaded: LoadedModel, source: Path, target: Path, chunk_rows: int) -> dict:
    """Stream ``source`` through the model into ``target`` (.parquet or .csv), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = Path(target)
    if target.suffix not in (".parquet", ".csv"):
        raise InputError(f"{target}: output must be .parquet or .csv")
    tmp = target.with_name(f".{target.name}.tmp")
    rows = bad = 0
    first_errors: list[str] = []
    writer: pq.ParquetWriter | None = None
    csv_started = False
    try:
        for chunk in iter_chunks(source, chunk_rows):
            scored = score_chunk(loaded, chunk, rows)
            rows += len(scored)
            failed = scored[scored["error"] != ""]
            bad += len(failed)
            first_errors += [f"row {r}: {e}" for r, e in zip(failed["row"], failed["error"], strict=True)][
                : 20 - len(first_errors)
            ]
            if target.suffix == ".csv":
                scored.to_csv(tmp, mode="a", header=not csv_started, index=False)
                csv_started = True
            else:
                table = pa.Table.from_pandas(scored, preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        if writer is not None:
            writer.close()
        if rows == 0:
            raise InputError(f"{source}: no rows to score")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "rows": rows,
        "bad_rows": bad,
        "first_errors": first_errors,
        "output": str(target),
        "model_version": loaded.version,
    }
