"""Event times: parse whatever a source holds into epoch milliseconds, and format for Heap.

Numbers are epoch milliseconds or seconds (told apart by size), strings are ISO 8601 (an offset is
respected, a naive time is UTC, never a local zone), datetimes are taken as they are (naive = UTC).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

INVALID_MS = np.iinfo(np.int64).min
MS_THRESHOLD = 100_000_000_000  # |n| >= 1e11 is milliseconds (1973+), below it seconds
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _from_numbers(values: np.ndarray) -> np.ndarray:
    values = values.astype("float64")
    out = np.full(len(values), INVALID_MS, dtype="int64")
    finite = np.isfinite(values)
    ms = np.where(np.abs(values) >= MS_THRESHOLD, values, values * 1000.0)
    ok = finite & (ms >= 0) & (ms <= MAX_MS)
    out[ok] = np.floor(ms[ok] + 1e-6).astype("int64")
    return out


def _from_datetimes(series: pd.Series) -> np.ndarray:
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    values = series.to_numpy(dtype="datetime64[ms]")
    out = values.astype("int64")
    out[np.isnat(values)] = INVALID_MS
    return out


def _from_text(series: pd.Series) -> np.ndarray:
    text = series.astype("string").str.strip()
    out = np.full(len(text), INVALID_MS, dtype="int64")
    numbers = pd.to_numeric(text, errors="coerce")
    numeric = numbers.notna().to_numpy()
    if numeric.any():
        out[numeric] = _from_numbers(numbers[numeric].to_numpy(dtype="float64"))
    rest = ~numeric & text.notna().to_numpy()
    if rest.any():
        parsed = _parse_iso(text[rest])
        out[rest] = _from_datetimes(parsed)
    return out


def _parse_iso(text: pd.Series) -> pd.Series:
    try:
        return pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        return pd.Series([_parse_one(v) for v in text], index=text.index, dtype="datetime64[ms, UTC]")


def _parse_one(value: object) -> pd.Timestamp:
    try:
        return pd.to_datetime(value, utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        return pd.NaT


def to_epoch_ms(series: pd.Series) -> np.ndarray:
    """Epoch ms for each value; INVALID_MS where a value is missing or cannot be read as a time."""
    if pd.api.types.is_bool_dtype(series):
        return np.full(len(series), INVALID_MS, dtype="int64")
    if pd.api.types.is_datetime64_any_dtype(series):
        out = _from_datetimes(series)
    elif pd.api.types.is_numeric_dtype(series):
        out = _from_numbers(series.to_numpy(dtype="float64", na_value=np.nan))
    elif (digits := _all_digits(series)) is not None:
        out = _from_numbers(digits)
    else:
        out = _from_text(series.map(_as_time_text, na_action="ignore"))
    bad = (out < 0) | (out > MAX_MS)
    out[bad] = INVALID_MS
    return out


def _all_digits(series: pd.Series) -> np.ndarray | None:
    """The common case of a text column (a CSV's epoch milliseconds): every value ASCII digits and
    nothing else, read as integers in one pass; None when any value is something else (missing,
    blank, signed, spaced, ISO text ...), which ``_from_text`` then reads as before."""
    if not pd.api.types.is_string_dtype(series) or pd.api.types.is_object_dtype(series) or series.hasnans:
        return None
    values = series.tolist()
    joined = "".join(values)
    if not (joined.isascii() and joined.isdigit()) or "" in values:
        return None
    try:
        return np.fromiter(map(int, values), dtype=np.int64, count=len(values))
    except (OverflowError, ValueError):  # beyond int64, or past int()'s 4,300 digits: the general path
        return None


def _as_time_text(value: object) -> object:
    """Datetimes from a database driver in an object column become ISO text, bools become None."""
    if isinstance(value, bool):
        return None
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text
    return value


def format_ms(ms: np.ndarray) -> np.ndarray:
    """ISO 8601 UTC with milliseconds and an explicit offset: ``2024-03-10T22:21:56.123+00:00``."""
    text = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")
    return np.char.add(text, "+00:00")
