"""Warehouse (SQLite, PostgreSQL) and JSON Lines sources: same events as CSV, bound parameters."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from scripts.sample_warehouse import load_sqlite, payloads, write_jsonl
from tests.conftest import ROOT, received
from tests.warehouse import PG_DSN, load_postgres, postgres_connection
from walkme_heap.emulator import HeapEmulator
from walkme_heap.local_run import run_dag
from walkme_heap.mapping.columns import bind_columns
from walkme_heap.mapping.mapper import Mapper
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec
from walkme_heap.sources.base import SourceError
from walkme_heap.sources.jsonl_files import JsonLinesSource
from walkme_heap.sources.sql import SqlSource, bind, table_query
from walkme_heap.window import Window

DAY = Window(datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC))
DAY_RUN = datetime(2024, 3, 11, tzinfo=UTC)
MAPPING = """
    mapping:
      event_name: {event_type: complete}
      properties: {exclude: [oType, id]}
"""


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


# -- JSON Lines ----------------------------------------------------------------------------------
def test_jsonl_records_are_flattened_and_bad_lines_counted(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text(
        '{"wm.euId": "u", "ctx": {"title": "T"}, "tags": ["a", "b"]}\n\n[1]\nnot json\n{"wm.euId": "v"}\n'
    )
    source = JsonLinesSource(str(path), DAY, chunk_rows=1)
    assert source.headers(str(path)) == ["wm.euId", "ctx.title", "tags"]
    chunks = list(source.chunks(str(path)))
    frames = [c.frame for c in chunks if not c.frame.empty]
    assert [f.index.tolist() for f in frames] == [[1], [5]]
    assert frames[0].to_dict("records") == [{"wm.euId": "u", "ctx.title": "T", "tags": ["a", "b"]}]
    assert [n for c in chunks for n, _ in c.malformed] == [3, 4]


def test_keys_missing_from_a_chunk_make_rows_invalid_not_a_crash() -> None:
    spec = MappingSpec()
    mapper = Mapper(spec, bind_columns(spec, ["wm.euId", "created_at"], "x"))
    import pandas as pd

    result = mapper.map_chunk(pd.DataFrame({"wm.euId": ["u"]}), DAY.start_ms, DAY.end_ms)
    assert result.invalid == {"unparsable_time": 1}


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


# -- through the DAG -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_payloads() -> list[dict]:
    return payloads()


def replay_with(config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **conf) -> dict:
    path = tmp_path / "pipelines.yaml"
    path.write_text(config)
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(path))
    ledgers = len(list(tmp_path.glob("ledger-*")))
    monkeypatch.setenv("WALKME_HEAP_HOME", str(tmp_path / f"ledger-{ledgers}"))  # a fresh ledger each
    result = run_dag(ROOT / "dags", "walkme_to_heap_wh", DAY_RUN, conf or None)
    assert result.state == "success"
    assert result.summary is not None
    return result.summary


def normalised(events: list[dict]) -> dict[str, dict]:
    """Events by key, property values as text (CSV carries text, JSON carries numbers)."""
    return {
        e["idempotency_key"]: {**e, "properties": {k: str(v) for k, v in e.get("properties", {}).items()}}
        for e in events
    }


def reset(emulator: HeapEmulator) -> None:
    requests.post(f"{emulator.url}/_emulator/reset", timeout=5)


PIPELINE = "pipelines:\n  wh:\n    start_date: 2024-03-10\n    retries: 0\n    source:\n"


@pytest.mark.e2e
def test_the_same_day_from_csv_jsonl_sqlite_and_postgres_gives_the_same_events(
    airflow_db: Path,
    heap_connection: HeapEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sample_payloads: list[dict],
) -> None:
    emulator = heap_connection
    # Every day's file: the 03-11 file holds late rows of 03-10, which the warehouse holds too.
    csv_path = ROOT / "include" / "sample_exports" / "webhooks" / "walkme_webhooks_*.csv"
    sent: dict[str, dict] = {}

    summary = replay_with(PIPELINE + f"      path: {csv_path}\n" + MAPPING, tmp_path, monkeypatch)
    sent["csv"] = normalised(received(emulator))
    assert summary["sent"] == 486

    reset(emulator)
    jsonl = write_jsonl(tmp_path / "all-days.jsonl", sample_payloads)
    summary = replay_with(
        PIPELINE + f"      type: jsonl\n      path: {jsonl}\n" + MAPPING, tmp_path, monkeypatch
    )
    sent["jsonl"] = normalised(received(emulator))
    assert summary["sent"] == 486

    reset(emulator)
    load_sqlite(tmp_path / "warehouse.db", sample_payloads)
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")})
    )
    sql_source = (
        "      type: sql\n      conn_id: warehouse\n      table: walkme_events\n"
        "      time_column: created_at\n      time_type: {time_type}\n"
        "      order_by: [created_at, id]\n      payload_column: payload\n      chunk_rows: 100\n"
    )
    summary = replay_with(PIPELINE + sql_source.format(time_type="epoch_ms") + MAPPING, tmp_path, monkeypatch)
    sent["sqlite"] = normalised(received(emulator))
    assert summary["sent"] == 486 and summary["skipped_by_reason"] == {
        "duplicate_in_source": 1,
        "non_production": 3,
    }

    reset(emulator)
    load_postgres(sample_payloads, "walkme_events_e2e")
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgresql://postgres@127.0.0.1:5432/test")
    summary = replay_with(
        PIPELINE
        + sql_source.format(time_type="timestamptz").replace("walkme_events", "walkme_events_e2e")
        + MAPPING,
        tmp_path,
        monkeypatch,
    )
    sent["postgres"] = normalised(received(emulator))
    assert (
        summary["sent"] == 486
        and summary["read"] == summary["sent"] + summary["invalid"] + summary["skipped"]
    )

    assert len(sent["csv"]) == 486
    for name in ("jsonl", "sqlite", "postgres"):
        assert set(sent[name]) == set(sent["csv"]), name
        assert sent[name] == sent["csv"], name


@pytest.mark.e2e
def test_query_file_with_bounds(
    airflow_db: Path,
    heap_connection: HeapEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sample_payloads: list[dict],
) -> None:
    load_sqlite(tmp_path / "warehouse.db", sample_payloads)
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")})
    )
    query = ROOT / "include" / "sql" / "walkme_events_sqlite.sql"
    summary = replay_with(
        PIPELINE + f"      type: sql\n      conn_id: warehouse\n      query_file: {query}\n"
        "      time_type: epoch_ms\n      payload_column: payload\n" + MAPPING,
        tmp_path,
        monkeypatch,
    )
    assert summary["sent"] == 486


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "      type: sql\n      conn_id: nowhere\n      table: t\n      time_column: c\n"
            "      time_type: epoch_ms\n",
            "connection 'nowhere' is not defined",
        ),
        (
            "      type: sql\n      conn_id: files\n      table: t\n      time_column: c\n"
            "      time_type: epoch_ms\n",
            "connection 'files' is not a SQL connection",
        ),
        (
            "      type: sql\n      conn_id: warehouse\n      table: missing_table\n"
            "      time_column: created_at\n      time_type: epoch_ms\n",
            "no such table: missing_table",
        ),
        (
            "      type: sql\n      conn_id: warehouse\n      table: walkme_events\n"
            "      time_column: happened_at\n      time_type: epoch_ms\n",
            "no such column: happened_at",
        ),
        (
            "      type: sql\n      conn_id: warehouse\n      query_file: {bad_query}\n",
            "must use both :window_start and :window_end",
        ),
        (
            "      type: sql\n      conn_id: warehouse\n      table: walkme_events\n"
            "      time_column: created_at\n      time_type: epoch_ms\n",
            "missing required columns: identity",
        ),
    ],
)
def test_sql_problems_are_named_before_anything_is_sent(
    airflow_db: Path,
    heap_connection: HeapEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    source: str,
    message: str,
) -> None:
    load_sqlite(tmp_path / "warehouse.db", payloads()[:5])
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")})
    )
    monkeypatch.setenv("AIRFLOW_CONN_FILES", json.dumps({"conn_type": "fs"}))
    bad_query = tmp_path / "bad.sql"
    bad_query.write_text("SELECT * FROM walkme_events WHERE created_at >= :window_start")
    config = tmp_path / "pipelines.yaml"
    config.write_text(PIPELINE + source.format(bad_query=bad_query))
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(config))
    result = run_dag(ROOT / "dags", "walkme_to_heap_wh", DAY_RUN)
    assert result.state == "failed"
    out = capfd.readouterr().out
    assert "pipeline 'wh'" in out and message in out
    assert requests.get(f"{heap_connection.url}/_emulator/stats", timeout=5).json().get("requests", 0) == 0
