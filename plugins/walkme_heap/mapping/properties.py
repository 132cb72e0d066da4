"""Heap event properties: flat, string or number values, fewer than 1024 characters each.

Booleans become ``"true"`` / ``"false"``, empty strings and NaN are dropped, arrays are joined with
``||`` (as Heap itself does), and long strings are cut to 1023 characters and counted, so a report
can say how many values were shortened. Sources flatten nested objects into dotted keys.

Numbers go as JSON numbers only when a double holds them exactly (JSON readers, JavaScript's and
most others, read numbers as doubles): an integer beyond 2^53 - 1 and a decimal (SQL ``NUMERIC``)
with more digits than a double holds go as their exact decimal text.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from walkme_heap.heap_api import MAX_PROPERTY_CHARS

MAX_EXACT_INTEGER = 2**53 - 1  # the largest integer every JSON reader holds exactly


def _leaves(values: list[Any] | tuple[Any, ...]) -> Iterator[Any]:
    """The items of nested lists in order, without recursion (JSON allows 1,024 levels)."""
    stack = [iter(values)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, (list, tuple)):
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


def exact_integer(value: int) -> int | str:
    """An integer as a JSON number when readers hold it exactly, else as its digits."""
    return value if -MAX_EXACT_INTEGER <= value <= MAX_EXACT_INTEGER else str(value)


def exact_decimal(value: Decimal) -> int | float | str | None:
    """A SQL decimal as a number when a double holds it exactly (``12.50`` -> 12.5), else as text."""
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        if abs(value) <= MAX_EXACT_INTEGER:
            return int(value)
        return format(value.to_integral_value(), "f")  # its digits (str(int) stops at 4,300 of them)
    number = float(value)
    return number if Decimal(repr(number)) == value else str(value)


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
            return exact_integer(int(value))
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, Decimal):  # SQL NUMERIC, exact JSON decimals
            return exact_decimal(value)
        if isinstance(value, (list, tuple)):
            parts = [self.value(v) for v in _leaves(value)]
            value = "||".join(str(p) for p in parts if p is not None)
        elif isinstance(value, dict):
            try:
                value = str(value)
            except RecursionError:  # nested deeper than Python's repr goes: said, never a crash
                value = f"<an object nested deeper than {sys.getrecursionlimit()} levels>"
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
            values = series.to_numpy(dtype=object, na_value=None).tolist()
            # Most columns hold only short, non-blank text (missing values are None, dropped): then
            # they stay as they are, checked in three passes in C. Otherwise value by value.
            if "" not in values:
                present = list(filter(None, values)) if None in values else values
                if max(map(len, present), default=0) <= MAX_PROPERTY_CHARS and not any(
                    map(str.isspace, present)
                ):
                    return values
            text = self.text
            return [v if v and len(v) <= MAX_PROPERTY_CHARS and not v.isspace() else text(v) for v in values]
        if pd.api.types.is_integer_dtype(series) and not series.hasnans:
            values = series.to_numpy()
            if len(values) and (values.max() > MAX_EXACT_INTEGER or values.min() < -MAX_EXACT_INTEGER):
                return [exact_integer(int(v)) for v in values]
            return [int(v) for v in values]
        return [self.value(v) for v in series.tolist()]


def property_key(key: str) -> str:
    """Keys are kept as the source spells them (Heap keys are case-sensitive), capped in length; a
    header's bytes that are not UTF-8 (lone surrogates) become U+FFFD."""
    return replace_escaped(key)[:MAX_PROPERTY_CHARS]


def replace_escaped(value: Any) -> Any:
    """Text with undecodable bytes kept as lone surrogates -> U+FFFD for them, as a replacing
    decoder gives; anything else as it is."""
    if type(value) is not str or value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
