"""Where a source type is chosen: a ``SourceSpec`` and a window -> the source that reads them.

A new source type is a module in ``sources/`` and one entry in ``OPENERS``; the connections it
needs come through ``Connections`` (Airflow's, in a task), never from Airflow directly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from walkme_heap.connections import ConnectionNotDefined, Connections, UnusableConnection
from walkme_heap.sources.base import Source, SourceError
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.sources.files import FileSource
from walkme_heap.sources.jsonl_files import JsonLinesSource
from walkme_heap.sources.spec import SourceSpec
from walkme_heap.sources.sql import SqlSource, table_query
from walkme_heap.window import Window


def _files(
    cls: type[FileSource], spec: SourceSpec, window: Window, connections: Connections, **kw: Any
) -> Source:
    path = spec.located(spec.path)
    if not path:
        raise SourceError("the source's path is empty (check what its template renders to)")
    return cls(
        path,
        window,
        chunk_rows=spec.chunk_rows,
        on_missing=spec.on_missing,
        fs_factory=connections.filesystem(spec.conn_id),
        max_record_bytes=spec.max_record_bytes,
        **kw,
    )


def _csv(spec: SourceSpec, window: Window, connections: Connections) -> Source:
    return _files(
        CsvSource,
        spec,
        window,
        connections,
        delimiter=spec.delimiter,
        duplicate_headers=dict(spec.duplicate_headers),
    )


def _jsonl(spec: SourceSpec, window: Window, connections: Connections) -> Source:
    return _files(JsonLinesSource, spec, window, connections)


def _sql(spec: SourceSpec, window: Window, connections: Connections) -> Source:
    try:
        sql = connections.sql(spec.conn_id or "")
    except (ConnectionNotDefined, UnusableConnection) as exc:
        raise SourceError(str(exc)) from None
    by_load = spec.window_on == "load_time"
    if spec.table:
        column = (spec.load_time_column if by_load else spec.time_column) or ""
        # a load batch shares one load time: order within it by event time too (deterministic)
        order = spec.order_by or ((column, spec.time_column or column) if by_load else ())
        query = table_query(spec.table, column, order)
        label = f"{spec.conn_id}:{spec.table}"
    else:
        query_file = Path(spec.located(spec.query_file) or "")
        try:
            query = query_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SourceError(f"the query file {query_file} cannot be read: {exc}") from None
        label = f"{spec.conn_id}:{query_file.name}"
    return SqlSource(
        sql.connect,
        sql.placeholder,
        window,
        query=query,
        time_type=(spec.load_time_type or spec.time_type) if by_load else spec.time_type,
        payload_column=spec.payload_column,
        chunk_rows=spec.chunk_rows,
        label=label,
    )


OPENERS: dict[str, Callable[[SourceSpec, Window, Connections], Source]] = {
    "csv": _csv,
    "jsonl": _jsonl,
    "sql": _sql,
}
SOURCE_TYPES = tuple(OPENERS)


def open_source(
    spec: SourceSpec, window: Window, connections: Connections, *, accepted: Window | None = None
) -> Source:
    """The source of ``spec`` for one window; raises SourceError when it cannot be opened.

    ``accepted``: the event times the run sends (its window opened by the pipeline's lateness). A
    SQL source bounded by event time reads all of them (a row loaded after its own day's run is
    found by the next runs); files and a SQL source bounded by load time read the run's window
    (arrival), and the mapping judges each event's time."""
    opener = OPENERS.get(spec.type)
    if opener is None:
        raise SourceError(f"source type must be one of {', '.join(SOURCE_TYPES)}, got {spec.type!r}")
    if spec.type == "sql" and spec.window_on == "event_time" and accepted is not None:
        window = accepted
    return opener(spec, window, connections)
