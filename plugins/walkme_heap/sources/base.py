"""What every source is and yields, and the errors a source raises."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import orjson
import pandas as pd

# Rows a chunk: bounds memory (a chunk of JSON payloads is the heaviest). 10,000 rather than 20,000:
# the same CPU a row, about 20 MB less peak memory (a 1M-row dry run: 130 MB against 151, measured in
# turns); 5,000 cost sending about 10% more CPU.
DEFAULT_CHUNK_ROWS = 10_000


class SourceError(RuntimeError):
    """The source cannot be read as configured (a clear message, no data problem)."""


class SourceMissingError(SourceError):
    """The window's input does not exist (a day's file is missing)."""


@dataclass
class Chunk:
    """A bounded slice of rows from one origin (a file or a query).

    The frame's index holds each row's 1-based record number within its origin, so a dead letter
    can point back at the source row. ``malformed`` lists records the parser could not split into
    the header's fields: (record number, parser message); they count as read and invalid.
    ``escaped`` says the frame's text may hold bytes that are not UTF-8, kept as lone surrogates
    (``surrogateescape``), so the mapper can refuse such identities instead of merging them.
    """

    frame: pd.DataFrame
    origin: str
    malformed: list[tuple[int, str]] = field(default_factory=list)
    escaped: bool = False


class Source(Protocol):
    """What a replay needs from a source: its origins (files, queries), headers, chunks, progress."""

    def origins(self) -> list[str]: ...
    def headers(self, origin: str) -> list[str]: ...
    def chunks(self, origin: str) -> Iterator[Chunk]: ...
    def progress(self) -> float | None:
        """The share of the window read so far, when it can be known (for an ETA)."""
        ...


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) pairs of a JSON object, depth first in key order; lists stay leaves
    (properties join them). Iterative: orjson accepts 1024 levels, Python's recursion does not."""
    if not isinstance(value, dict):
        yield prefix, value
        return
    stack = [(prefix, iter(value.items()))]
    while stack:
        path, items = stack[-1]
        for key, item in items:
            name = f"{path}.{key}" if path else str(key)
            if isinstance(item, dict):
                stack.append((name, iter(item.items())))
                break
            yield name, item
        else:
            stack.pop()


# A number (after ":", "[" or ",", not inside a string's quotes) with 16 significant digits or more:
# one a double may not hold exactly (every decimal of 15 digits round-trips; 2^53 has 16).
_LONG_NUMBER = r"[:\[,]\s*-?\d(?:\.?\d){15}"
_LONG_NUMBER_BYTES = re.compile(_LONG_NUMBER.encode())
_LONG_NUMBER_TEXT = re.compile(_LONG_NUMBER)


def loads_exact(data: bytes | str) -> Any:
    """JSON -> Python values with every number exact. orjson reads an integer of 2^64 or more,
    and a decimal with more digits than a double holds, as a float: such a document (rare: it holds
    a number of 16 digits or more, and orjson gave a float) is read again, integers exact and each
    decimal a float when the float is exactly that decimal, else a ``Decimal``. ``str`` input may
    hold lone surrogates (bytes that were not UTF-8); orjson refuses those, the standard reader
    does not."""
    if isinstance(data, str) and not data.isascii() and has_surrogate(data):
        return _exact(data)
    value = orjson.loads(data)
    pattern = _LONG_NUMBER_TEXT if isinstance(data, str) else _LONG_NUMBER_BYTES
    if pattern.search(data) and _holds_float(value):  # type: ignore[arg-type]
        return _exact(data)
    return value


def _exact(data: bytes | str) -> Any:
    try:
        return json.loads(data, parse_float=_exact_float)
    except RecursionError:  # orjson reads 1,024 levels; Python's reader fewer
        raise ValueError("nested too deeply to read its numbers exactly") from None


def _exact_float(text: str) -> float | Decimal:
    number = float(text)
    try:
        exact = Decimal(text)
        return number if Decimal(repr(number)) == exact else exact
    except ArithmeticError:  # an exponent no Decimal context holds: the float, as orjson reads it
        return number


def has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _holds_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def exact_numbers(frame: pd.DataFrame, raw: Callable[[int, str], list[Any]]) -> pd.DataFrame:
    """Undo pandas' float64 for integer columns with a missing value: ``raw(position, name)`` gives
    the column's values as the source held them, kept as objects (exact integers, None)."""
    for position, (name, dtype) in enumerate(frame.dtypes.items()):
        if dtype.kind != "f":
            continue
        values = raw(position, str(name))
        if any(type(v) is int or isinstance(v, Decimal) for v in values):
            frame[name] = pd.Series(
                [None if v is None or (type(v) is float and v != v) else v for v in values],
                index=frame.index,
                dtype=object,
            )
    return frame


def records_frame(records: list[dict[str, Any]], index: list[int]) -> pd.DataFrame:
    """A frame of flattened JSON records (webhook payloads), one column per dotted key.

    Columns keep the payload's spelling (``wm.euId``, ``ctx.location.hostname``), so the webhook
    preset maps a payload exactly as it maps a CSV export of the same payloads. Integers stay exact
    (a key missing from some records does not turn its integers into floats).
    """
    rows = [
        dict(flatten(record)) if any(isinstance(v, dict) for v in record.values()) else record
        for record in records
    ]
    if not rows:
        return pd.DataFrame(index=pd.Index([], dtype="int64"))
    frame = pd.DataFrame.from_records(rows, index=pd.Index(index, dtype="int64"))
    return exact_numbers(frame, lambda _, name: [row.get(name) for row in rows])
