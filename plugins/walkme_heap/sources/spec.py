"""What a pipeline says about where its rows come from (built by ``config``, opened by ``factory``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from walkme_heap.sources.base import DEFAULT_CHUNK_ROWS


@dataclass
class SourceSpec:
    """Files (csv, jsonl) or a SQL connection (sql).

    Its text settings are Airflow template fields (``template_fields``): the operator renders them
    in place before a run, e.g. a ``path`` holding ``{{ ds }}``. ``serialize`` is what Airflow stores
    and shows of it (the DAG's serialised form, the task's rendered fields).
    """

    type: str  # "csv", "jsonl" or "sql"
    path: str | None = None  # files: local path or URL, with {date:...} and globs
    conn_id: str | None = None  # files: object storage connection; sql: the SQL connection
    on_missing: str = "fail"  # files: "fail" or "skip" (a missing day replays zero rows)
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    delimiter: str = ","  # csv
    table: str | None = None  # sql: a table (or view) ...
    query_file: str | None = None  # sql: ... or a query using :window_start and :window_end
    time_column: str | None = None  # sql table: the event-time column the window applies to
    time_type: str = "timestamptz"  # sql: timestamptz, timestamp (naive UTC), epoch_ms, epoch_s
    order_by: tuple[str, ...] = ()  # sql table: deterministic order (default: time column)
    payload_column: str | None = None  # sql: a JSON column holding the raw webhook payload

    template_fields = ("path", "conn_id", "table", "query_file", "time_column", "payload_column")

    def serialize(self) -> dict[str, Any]:
        """The settings that are set, as plain values."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}
