"""What every source yields, and the errors a source raises."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


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
