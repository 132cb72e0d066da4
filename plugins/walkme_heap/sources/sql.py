"""A window of WalkMe events from a SQL database, streamed through a cursor.

The window bounds reach the database only as bind parameters, in the driver's placeholder style
(``?`` or ``%s``): a query names them ``:window_start`` and ``:window_end`` and this module swaps
each marker for a placeholder; a query that does not use both is refused. Rows are fetched with
``fetchmany`` from a server-side cursor where the driver has one (psycopg, MySQL), so a day of any
size replays in flat memory. No Airflow import: the operator supplies ``connect`` and the
placeholder from the connection's hook.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd

from walkme_heap.sources.base import (
    DEFAULT_CHUNK_ROWS,
    Chunk,
    SourceError,
    exact_numbers,
    loads_exact,
    records_frame,
)
from walkme_heap.window import Window

log = logging.getLogger(__name__)
TIME_TYPES = ("timestamptz", "timestamp", "epoch_ms", "epoch_s")
_MARKER = re.compile(r"(?<![:\w]):(window_start|window_end)\b")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$")


def check_identifier(name: str, what: str) -> str:
    """Table and column names cannot be bind parameters: accept plain identifiers only."""
    if not _IDENTIFIER.match(name):
        raise SourceError(
            f"{what} {name!r} is not a plain SQL identifier (letters, digits, _, $; schema.table); "
            "use a query file for anything else"
        )
    return name


def bound_values(window: Window, time_type: str) -> tuple[Any, Any]:
    """The window bounds as the time column's type wants them."""
    if time_type == "timestamptz":
        return window.start, window.end
    if time_type == "timestamp":  # naive, in UTC
        return window.start.replace(tzinfo=None), window.end.replace(tzinfo=None)
    if time_type == "epoch_ms":
        return window.start_ms, window.end_ms
    if time_type == "epoch_s":
        return window.start_ms // 1000, -(-window.end_ms // 1000)
    raise SourceError(f"time_type must be one of {', '.join(TIME_TYPES)}, got {time_type!r}")


# Spans where a marker is text, not a parameter: quoted strings and identifiers, comments,
# PostgreSQL dollar-quoted strings.
_NOT_CODE = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|(\$[A-Za-z_]*\$).*?\1", re.DOTALL
)


def _swap_markers(query: str, placeholder: str) -> tuple[str, list[str]]:
    """Replace markers outside strings and comments; return the SQL and the markers in order."""
    found: list[str] = []
    parts: list[str] = []

    def swap(code: str) -> str:
        def one(match: re.Match[str]) -> str:
            found.append(match.group(1))
            return placeholder

        return _MARKER.sub(one, code)

    position = 0
    for match in _NOT_CODE.finditer(query):
        parts.append(swap(query[position : match.start()]))
        parts.append(match.group(0))
        position = match.end()
    parts.append(swap(query[position:]))
    return "".join(parts), found


def bind(query: str, placeholder: str, start: Any, end: Any) -> tuple[str, list[Any]]:
    """Swap ``:window_start`` / ``:window_end`` for the driver's placeholders; return SQL, params."""
    if placeholder not in ("?", "%s"):
        raise SourceError(f"unsupported placeholder style {placeholder!r} (supported: ?, %s)")
    if placeholder == "%s":
        query = query.replace("%", "%%")  # literal percent signs survive pyformat drivers
    sql, found = _swap_markers(query, placeholder)
    missing = [name for name in ("window_start", "window_end") if name not in found]
    if missing:
        raise SourceError(
            f"the query must use both :window_start and :window_end (missing: "
            f"{', '.join(':' + m for m in missing)}): a query without both bounds would replay "
            "rows outside the run's window"
        )
    values = {"window_start": start, "window_end": end}
    return sql, [values[name] for name in found]


def table_query(table: str, time_column: str, order_by: Sequence[str]) -> str:
    """The query for a table: the window on its time column, in a deterministic order."""
    check_identifier(table, "table")
    check_identifier(time_column, "time_column")
    order = ", ".join(check_identifier(c, "order_by column") for c in (order_by or [time_column]))
    return (
        f"SELECT * FROM {table} WHERE {time_column} >= :window_start "
        f"AND {time_column} < :window_end ORDER BY {order}"
    )


def _cursor(connection: Any) -> Any:
    """A server-side cursor where the driver offers one, else the default cursor."""
    module = type(connection).__module__.split(".")[0]
    if module == "psycopg":
        from psycopg.types.json import set_json_loads

        set_json_loads(loads_exact, connection)  # orjson: JSONB decodes several times faster
    if module in ("psycopg", "psycopg2"):
        return connection.cursor(name=f"walkme_heap_{uuid.uuid4().hex[:12]}")
    if module in ("MySQLdb", "pymysql"):
        cursors = __import__(f"{module}.cursors", fromlist=["SSCursor"])
        return connection.cursor(cursors.SSCursor)
    return connection.cursor()


class SqlSource:
    """One query over one window; the single origin is named by ``label``."""

    def __init__(
        self,
        connect: Callable[[], Any],
        placeholder: str,
        window: Window,
        *,
        query: str,
        time_type: str = "timestamptz",
        payload_column: str | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        label: str = "sql",
    ) -> None:
        start, end = bound_values(window, time_type)
        self.query = query  # with its :window_start / :window_end markers (lineage parses it)
        self.sql, self.params = bind(query, placeholder, start, end)
        self.connect = connect
        self.payload_column = payload_column
        self.chunk_rows = chunk_rows
        self.label = label
        self._connection: Any = None
        self._cursor: Any = None
        self._columns: list[str] = []
        self._first: pd.DataFrame | None = None
        self._first_malformed: list[tuple[int, str]] = []
        self._fetched = 0
        self._total: int | None = None

    def origins(self) -> list[str]:
        return [self.label]

    def _fetch(self) -> tuple[pd.DataFrame, list[tuple[int, str]]] | None:
        try:
            rows = self._cursor.fetchmany(self.chunk_rows)
        except Exception as exc:
            self.close()
            raise SourceError(f"{self.label}: reading rows failed: {exc}") from exc
        if not rows:
            return None
        numbers = list(range(self._fetched + 1, self._fetched + 1 + len(rows)))
        self._fetched += len(rows)
        frame = pd.DataFrame.from_records(rows, columns=self._columns, coerce_float=False)
        frame = exact_numbers(frame, lambda position, _: [row[position] for row in rows])
        frame.index = pd.Index(numbers, dtype="int64")
        return self._expand_payload(frame)

    def _expand_payload(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
        """Flatten the JSON payload column into dotted columns; table columns take precedence."""
        if not self.payload_column:
            return frame, []
        if self.payload_column not in frame.columns:
            raise SourceError(f"{self.label}: no column {self.payload_column!r} (payload_column)")
        payloads: list[dict[str, Any]] = []
        keep: list[int] = []
        malformed: list[tuple[int, str]] = []
        for number, value in zip(frame.index, frame[self.payload_column].tolist(), strict=True):
            if isinstance(value, (str, bytes, bytearray)):
                try:
                    value = loads_exact(value)
                except ValueError:  # orjson.JSONDecodeError is one
                    value = None
            if isinstance(value, dict):
                payloads.append(value)
                keep.append(number)
            else:
                malformed.append((int(number), f"{self.payload_column} is not a JSON object"))
        frame = frame.loc[keep].drop(columns=[self.payload_column])
        expanded = records_frame(payloads, keep)
        extra = [c for c in expanded.columns if c not in frame.columns]
        return pd.concat([frame, expanded[extra]], axis=1), malformed

    def headers(self, origin: str) -> list[str]:
        """Runs the query and reads its first chunk: columns, payload keys included."""
        if self._cursor is None:
            try:
                self._connection = self.connect()
                self._cursor = _cursor(self._connection)
                self._cursor.execute(self.sql, self.params)
            except SourceError:
                raise
            except Exception as exc:
                self.close()
                raise SourceError(f"{self.label}: the query failed: {exc}".strip()) from exc
            self._columns = [d[0] for d in self._cursor.description or []]
            self._count_rows()
            first = self._fetch()
            if first is not None:
                self._first, self._first_malformed = first
        if self._first is not None:
            return [str(c) for c in self._first.columns]
        return [c for c in self._columns if c != self.payload_column]

    def _count_rows(self) -> None:
        """The window's row count, for progress and ETA (best effort: a failure only loses the ETA)."""
        try:
            with contextlib.closing(self._connection.cursor()) as cursor:
                cursor.execute(f"SELECT count(*) FROM ({self.sql}) AS walkme_heap_rows", self.params)
                self._total = int(cursor.fetchone()[0])
        except Exception as exc:
            log.info("%s: could not count the window's rows (%s); progress has no total", self.label, exc)
            self._total = None
            with contextlib.suppress(Exception):
                self._connection.rollback()

    def progress(self) -> float | None:
        """Share of the window's rows fetched so far."""
        if not self._total:
            return None
        return min(1.0, self._fetched / self._total)

    def chunks(self, origin: str) -> Iterator[Chunk]:
        self.headers(origin)
        try:
            if self._first is not None or self._first_malformed:
                frame = self._first if self._first is not None else pd.DataFrame()
                yield Chunk(frame=frame, origin=origin, malformed=self._first_malformed)
                self._first, self._first_malformed = None, []
            while (fetched := self._fetch()) is not None:
                frame, malformed = fetched
                yield Chunk(frame=frame, origin=origin, malformed=malformed)
        finally:
            self.close()

    def close(self) -> None:
        for thing in (self._cursor, self._connection):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self._cursor = self._connection = None
