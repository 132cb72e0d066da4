"""Every source type through the real DAG (``dag.test()``): the same day from CSV, JSON Lines, SQLite
and PostgreSQL gives the same events; SQL problems are named before anything is sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from devtools.local_run import run_dag
from devtools.sample_warehouse import load_sqlite, payloads, write_jsonl
from tests.helpers import ROOT, load_postgres, received, stats
from walkme_heap.emulator import HeapEmulator

DAY_RUN = datetime(2024, 3, 11, tzinfo=UTC)
MAPPING = """
    mapping:
      event_name: {event_type: complete}
      properties: {exclude: [oType, id]}
"""


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
    # Every day's file: the 03-11 file holds late rows of 03-10, which the warehouse holds too; with
    # the default lateness (2 days) the 5 events of 03-09 are sent too: 486 + 5.
    csv_path = ROOT / "include" / "sample_exports" / "webhooks" / "walkme_webhooks_*.csv"
    sent: dict[str, dict] = {}

    summary = replay_with(PIPELINE + f"      path: {csv_path}\n" + MAPPING, tmp_path, monkeypatch)
    sent["csv"] = normalised(received(emulator))
    assert summary["sent"] == 491

    reset(emulator)
    jsonl = write_jsonl(tmp_path / "all-days.jsonl", sample_payloads)
    summary = replay_with(
        PIPELINE + f"      type: jsonl\n      path: {jsonl}\n" + MAPPING, tmp_path, monkeypatch
    )
    sent["jsonl"] = normalised(received(emulator))
    assert summary["sent"] == 491

    reset(emulator)
    sqlite_warehouse(sample_payloads, tmp_path, monkeypatch)
    sql_source = (
        "      type: sql\n      conn_id: warehouse\n      table: walkme_events\n"
        "      time_column: created_at\n      time_type: {time_type}\n"
        "      order_by: [created_at, id]\n      payload_column: payload\n      chunk_rows: 100\n"
    )
    summary = replay_with(PIPELINE + sql_source.format(time_type="epoch_ms") + MAPPING, tmp_path, monkeypatch)
    sent["sqlite"] = normalised(received(emulator))
    assert summary["sent"] == 491 and summary["skipped_by_reason"] == {
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
        summary["sent"] == 491
        and summary["read"] == summary["sent"] + summary["invalid"] + summary["skipped"]
    )

    assert len(sent["csv"]) == 491
    for name in ("jsonl", "sqlite", "postgres"):
        assert set(sent[name]) == set(sent["csv"]), name
        assert sent[name] == sent["csv"], name


def sqlite_warehouse(rows: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The payloads in a SQLite table ``walkme_events``, the connection ``warehouse`` pointing at it."""
    load_sqlite(tmp_path / "warehouse.db", rows)
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")})
    )


@pytest.mark.e2e
@pytest.mark.usefixtures("airflow_db", "heap_connection")
def test_query_file_with_bounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_payloads: list[dict]
) -> None:
    sqlite_warehouse(sample_payloads, tmp_path, monkeypatch)
    query = ROOT / "include" / "sql" / "walkme_events_sqlite.sql"
    summary = replay_with(
        PIPELINE + f"      type: sql\n      conn_id: warehouse\n      query_file: {query}\n"
        "      time_type: epoch_ms\n      payload_column: payload\n" + MAPPING,
        tmp_path,
        monkeypatch,
    )
    assert summary["sent"] == 491


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
    sqlite_warehouse(payloads()[:5], tmp_path, monkeypatch)
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
    assert stats(heap_connection).get("requests", 0) == 0
