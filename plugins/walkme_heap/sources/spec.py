"""What a pipeline says about where its rows come from (built by ``config``, opened by ``factory``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from walkme_heap.sources.base import DEFAULT_CHUNK_ROWS
from walkme_heap.sources.files import DEFAULT_MAX_RECORD_BYTES


class SourceSpec(NamedTuple):
    """Files (csv, jsonl) or a SQL connection (sql).

    A tuple on purpose: it is an Airflow template field of the replay operator, and Airflow renders
    a tuple into a new one, so a task's rendering never changes the parsed DAG's spec (mapped shards
    and later runs of the same parse share it). Relative paths that hold a template are resolved
    against ``base_dir`` once rendered (``located``); the others were resolved when parsed.
    """

    type: str  # "csv", "jsonl" or "sql"
    path: str | None = None  # files: local path or URL, with {date:...} and globs
    conn_id: str | None = None  # files: object storage connection; sql: the SQL connection
    on_missing: str = "fail"  # files: "fail", "skip" (a missing day replays zero rows) or "wait"
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    delimiter: str = ","  # csv
    table: str | None = None  # sql: a table (or view) ...
    query_file: str | None = None  # sql: ... or a query using :window_start and :window_end
    time_column: str | None = None  # sql table: the event-time column the window applies to
    time_type: str = "timestamptz"  # sql: timestamptz, timestamp (naive UTC), epoch_ms, epoch_s
    order_by: tuple[str, ...] = ()  # sql table: deterministic order (default: time column)
    payload_column: str | None = None  # sql: a JSON column holding the raw webhook payload
    base_dir: str | None = None  # what relative paths are relative to (the configuration's folder)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES  # files: a longer record is malformed, never read
    # csv: {header: 1-based occurrence to read} for headers a file repeats, as sorted (name, n) pairs
    duplicate_headers: tuple[tuple[str, int], ...] = ()
    # sql: what the window bounds: "event_time" (the run also re-reads the lateness before it, so
    # rows loaded late are found) or "load_time" (rows loaded in the window, any event time: those
    # older than the lateness are counted and dead-lettered, never missed)
    window_on: str = "event_time"
    load_time_column: str | None = None  # sql table with window_on load_time: the load-time column
    load_time_type: str | None = None  # its type (default: time_type)
    wait_timeout_seconds: int = 12 * 3600  # files, on_missing wait: the sensor's timeout
    wait_poke_seconds: int = 300  # files, on_missing wait: how often the sensor looks

    def located(self, path: str | None) -> str | None:
        """A path as the source opens it: URLs and absolute paths as they are, else under ``base_dir``."""
        return located(path, Path(self.base_dir)) if path and self.base_dir else path

    def settings(self) -> dict[str, Any]:
        """The settings that are set, as plain values (for logs); the file guards only when changed
        from their defaults (most pipelines never set them)."""
        out: dict[str, Any] = {}
        for key, value in self._asdict().items():
            if value is None or (key in _GUARDS and value == self._field_defaults[key]):
                continue
            if key == "duplicate_headers":
                out[key] = dict(value)
            else:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


_GUARDS = ("max_record_bytes", "duplicate_headers", "window_on", "wait_timeout_seconds", "wait_poke_seconds")


def located(path: str, base_dir: Path) -> str:
    return path if "://" in path or Path(path).is_absolute() else str(base_dir / path)
