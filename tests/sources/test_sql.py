"""SQL sources: the window's bounds only as bind parameters, plain identifiers, and database types
that map like the same values as text (PostgreSQL)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.helpers import DAY, PG_DSN, postgres_connection
from walkme_heap.mapping.columns import bind_columns
from walkme_heap.mapping.mapper import Mapper
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec
from walkme_heap.sources.base import SourceError
from walkme_heap.sources.sql import SqlSource, bind, table_query


# -- binding -------------------------------------------------------------------------------------
def test_markers_become_the_drivers_placeholders() -> None:
    sql, params = bind("SELECT * FROM t WHERE c >= :window_start AND c < :window_end", "?", 1, 2)
    assert (sql, params) == ("SELECT * FROM t WHERE c >= ? AND c < ?", [1, 2])
    sql, params = bind(
        "SELECT '5%' AS p FROM t WHERE c < :window_end AND c >= :window_start AND x::date = c::date",
        "%s",
        1,
        2,
    )
    assert sql == "SELECT '5%%' AS p FROM t WHERE c < %s AND c >= %s AND x::date = c::date"
    assert params == [2, 1]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM t",
        "SELECT * FROM t WHERE c >= :window_start",
        "SELECT * FROM t WHERE c < :window_end",
        "SELECT ':window_startx'",
        "SELECT * FROM t -- c >= :window_start AND c < :window_end",
        "SELECT ':window_start', $$:window_end$$ FROM t",
    ],
)
def test_a_query_without_both_bounds_is_refused(query: str) -> None:
    with pytest.raises(SourceError, match="must use both :window_start and :window_end"):
        bind(query, "?", 1, 2)


def test_markers_in_strings_and_comments_are_left_alone() -> None:
    sql, params = bind(
        "/* :window_end */ SELECT ':window_start' AS s, \"a:window_end\" FROM t -- :window_end\n"
        "WHERE c >= :window_start AND c < :window_end",
        "?",
        1,
        2,
    )
    assert sql.endswith("WHERE c >= ? AND c < ?") and params == [1, 2]
    assert "':window_start'" in sql and "-- :window_end" in sql


def test_identifiers_are_checked() -> None:
    assert "ORDER BY created_at, id" in table_query("s.walkme", "created_at", ["created_at", "id"])
    for bad in ("t; DROP TABLE x", "t --", '"t"'):
        with pytest.raises(SourceError, match="not a plain SQL identifier"):
            table_query(bad, "created_at", [])


def test_a_bound_value_containing_sql_is_harmless(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "w.db")
    db.execute("CREATE TABLE walkme_events (created_at TEXT)")
    db.executemany("INSERT INTO walkme_events VALUES (?)", [("a",), ("b",), ("c",)])
    db.commit()
    evil = "b'; DROP TABLE walkme_events; --"
    sql, params = bind(
        "SELECT created_at FROM walkme_events WHERE created_at >= :window_start "
        "AND created_at < :window_end ORDER BY created_at",
        "?",
        "a",
        evil,
    )
    assert evil not in sql
    assert db.execute(sql, params).fetchall() == [("a",), ("b",)]  # compared as a plain string
    assert db.execute("SELECT count(*) FROM walkme_events").fetchone() == (3,)


# -- SQL types -----------------------------------------------------------------------------------
def test_postgres_types_map_like_text(tmp_path: Path) -> None:
    with postgres_connection() as db, db.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS wh_types")
        cur.execute(
            "CREATE TABLE wh_types (uid TEXT, aware TIMESTAMPTZ, naive TIMESTAMP, ms BIGINT, "
            "amount NUMERIC(10,2), whole NUMERIC, flag BOOLEAN, note TEXT, payload JSONB)"
        )
        cur.execute(
            "INSERT INTO wh_types VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s), (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            [
                "u1",
                datetime(2024, 3, 10, 1, tzinfo=UTC),
                datetime(2024, 3, 10, 1),
                1710032400000,
                Decimal("12.50"),
                Decimal("152605"),
                True,
                None,
                json.dumps({"ctx": {"title": "T"}}),
                "u2",
                datetime(2024, 3, 10, 2, tzinfo=UTC),
                datetime(2024, 3, 10, 2),
                1710036000000,
                None,
                None,
                False,
                "",
                json.dumps({"ctx": {"title": None}, "n": 1.5}),
            ],
        )
    import psycopg

    results = {}
    for column, time_type in (("aware", "timestamptz"), ("naive", "timestamp"), ("ms", "epoch_ms")):
        source = SqlSource(
            lambda: psycopg.connect(PG_DSN),
            "%s",
            DAY,
            query=table_query("wh_types", column, [column]),
            time_type=time_type,
            payload_column="payload",
            chunk_rows=1,
        )
        spec = MappingSpec(
            columns={"identity": ["uid"], "timestamp": [column], "item_id": ["whole"]},
            include_properties=("amount", "whole", "flag", "note", "ctx.*", "n"),
            event_name=EventNameSpec(constant="Typed"),
        )
        mapper = Mapper(spec, bind_columns(spec, source.headers("pg"), "pg"))
        events = [
            e for c in source.chunks("pg") for e in mapper.map_chunk(c.frame, DAY.start_ms, DAY.end_ms).events
        ]
        results[column] = events
    assert results["aware"] == results["naive"] == results["ms"]
    first, second = results["aware"]
    assert first["timestamp"] == "2024-03-10T01:00:00.000+00:00"
    assert first["properties"] == {"amount": 12.5, "whole": 152605, "flag": "true", "ctx.title": "T"}
    assert second["properties"] == {"flag": "false", "n": 1.5}
