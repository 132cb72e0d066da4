"""PostgreSQL helpers for the warehouse tests (the sample payloads come from scripts/)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import pytest

from scripts.sample_warehouse import created_ms

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_connection() -> Any:
    """A psycopg connection to the local server; skip without one, unless CI requires it."""
    import psycopg

    try:
        return psycopg.connect(PG_DSN, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must be reachable under CI=true: {exc}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")


def load_postgres(rows: list[dict[str, Any]], table: str) -> None:
    """A timestamptz time column and a JSONB payload, loaded with COPY."""
    with postgres_connection() as db, db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ, payload JSONB)")
        with cur.copy(f"COPY {table} (created_at, payload) FROM STDIN") as copy:
            for r in rows:
                ms = created_ms(r)
                when = datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None
                copy.write_row((when, json.dumps(r, ensure_ascii=False)))
