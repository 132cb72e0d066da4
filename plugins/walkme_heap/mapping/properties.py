"""Heap event properties: flat, string or number values, fewer than 1024 characters each.

Booleans become ``"true"`` / ``"false"``, empty strings and NaN are dropped, arrays are joined with
``||`` (as Heap itself does), and long strings are cut to 1023 characters and counted, so a report
can say how many values were shortened. Sources flatten nested objects into dotted keys.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from walkme_heap.heap_api import MAX_PROPERTY_CHARS


class PropertyCleaner:
    """Turns column values into Heap-ready values; counts truncations."""

    def __init__(self) -> None:
        self.truncated = 0

    def value(self, value: Any) -> str | int | float | None:
        """One value -> a Heap property value, or None to drop it."""
        if value is None or value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, (bool, np.bool_)):
            return "true" if value else "false"
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, Decimal):  # SQL NUMERIC
            if not value.is_finite():
                return None
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, (list, tuple)):
            parts = [self.value(v) for v in value]
            value = "||".join(str(p) for p in parts if p is not None)
        elif isinstance(value, dict):
            value = str(value)
        elif not isinstance(value, str):
            value = value.isoformat() if hasattr(value, "isoformat") else str(value)
        if not value.strip():
            return None
        if len(value) > MAX_PROPERTY_CHARS:
            self.truncated += 1
            return value[:MAX_PROPERTY_CHARS]
        return value

    def text(self, value: str | None) -> str | None:
        """Missing or blank text -> None (dropped); long text cut to 1023 characters and counted."""
        if value is None or not value.strip():
            return None
        if len(value) > MAX_PROPERTY_CHARS:
            self.truncated += 1
            return value[:MAX_PROPERTY_CHARS]
        return value

    def column(self, series: pd.Series) -> list[Any]:
        """A whole column at once; string columns take a vectorised path."""
        if pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series):
            # One pass in a comprehension: most values are short, non-blank text and stay as they are.
            text = self.text
            return [
                v if v and len(v) <= MAX_PROPERTY_CHARS and not v.isspace() else text(v)
                for v in series.to_numpy(dtype=object, na_value=None)
            ]
        if pd.api.types.is_integer_dtype(series) and not series.hasnans:
            return [int(v) for v in series.to_numpy()]
        return [self.value(v) for v in series.tolist()]


def property_key(key: str) -> str:
    """Keys are kept as the source spells them (Heap keys are case-sensitive), capped in length."""
    return key[:MAX_PROPERTY_CHARS]
