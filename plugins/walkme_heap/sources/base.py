"""What every source is and yields, and the errors a source raises."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

DEFAULT_CHUNK_ROWS = 20_000  # rows a chunk: bounds memory (a chunk of JSON payloads is the heaviest)


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
    """

    frame: pd.DataFrame
    origin: str
    malformed: list[tuple[int, str]] = field(default_factory=list)


class Source(Protocol):
    """What a replay needs from a source: its origins (files, queries), headers, chunks, progress."""

    def origins(self) -> list[str]: ...
    def headers(self, origin: str) -> list[str]: ...
    def chunks(self, origin: str) -> Iterator[Chunk]: ...
    def progress(self) -> float | None:
        """The share of the window read so far, when it can be known (for an ETA)."""
        ...


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) pairs of a JSON object; lists stay leaves (properties join them)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def records_frame(records: list[dict[str, Any]], index: list[int]) -> pd.DataFrame:
    """A frame of flattened JSON records (webhook payloads), one column per dotted key.

    Columns keep the payload's spelling (``wm.euId``, ``ctx.location.hostname``), so the webhook
    preset maps a payload exactly as it maps a CSV export of the same payloads.
    """
    rows = [
        dict(flatten(record)) if any(isinstance(v, dict) for v in record.values()) else record
        for record in records
    ]
    return (
        pd.DataFrame.from_records(rows, index=pd.Index(index, dtype="int64"))
        if rows
        else (pd.DataFrame(index=pd.Index([], dtype="int64")))
    )
