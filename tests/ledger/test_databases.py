"""The ledger on each database it supports (SQLite, PostgreSQL, MariaDB for MySQL too): its schema is
made on an empty database, also by workers that open it at the same moment; big batches, text and
clocks come back as stored; every MySQL driver works; a driver the ledger does not know is refused."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import (
    DATABASE_KINDS,
    DAY,
    MARIADB,
    declared_schema,
    ledger_schema,
    run_in_threads,
    scratch_database,
)
from walkme_heap.ledger import Ledger
from walkme_heap.ledger.budget import TABLE as BUDGET_TABLE
from walkme_heap.ledger.database import UnsupportedDatabase


def _events(count: int, day: str = "2024-03-10") -> list[dict[str, Any]]:
    return [
        {"idempotency_key": f"wmh1-{uuid.uuid4().hex}", "timestamp": f"{day}T01:00:00.000+00:00"}
        for _ in range(count)
    ]


@pytest.mark.parametrize("kind", DATABASE_KINDS)
def test_the_schema_is_made_on_an_empty_database(kind: str, tmp_path: Path) -> None:
    with scratch_database(kind, tmp_path) as (connect, placeholder):
        ledger = Ledger(connect, placeholder)
        ledger.acks.record("p", "run-1", _events(3), "app")
        ledger.close()
        assert ledger_schema(connect) == declared_schema()
        again = Ledger(connect, placeholder)  # a later open finds it complete and changes nothing
        try:
            assert len(again.acks.acknowledged("p", DAY.days(), app_id="app")) == 3
        finally:
            again.close()
        assert ledger_schema(connect) == declared_schema()


@pytest.mark.parametrize("kind", DATABASE_KINDS)
def test_workers_that_open_a_new_ledger_at_once_all_get_it(kind: str, tmp_path: Path) -> None:
    """Six workers open the same empty database at the same moment: each one's check and CREATE race
    the others'; every worker gets a working ledger, and the schema is made once."""
    with scratch_database(kind, tmp_path) as (connect, placeholder):
        start = threading.Barrier(6)
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            ledger = Ledger(connect, placeholder)
            try:
                start.wait()
                ledger.acks.record("p", f"run-{n}", _events(2), "app")
            except BaseException as exc:
                errors.append(exc)
            finally:
                ledger.close()

        run_in_threads(worker, 6)
        assert not errors, errors
        assert ledger_schema(connect) == declared_schema()
        ledger = Ledger(connect, placeholder)
        try:
            assert len(ledger.acks.acknowledged("p", DAY.days(), app_id="app")) == 12
        finally:
            ledger.close()


@pytest.mark.parametrize("kind", DATABASE_KINDS)
def test_what_is_stored_comes_back_exactly(kind: str, tmp_path: Path) -> None:
    """A batch far bigger than MySQL's 64 KiB BLOB (100,000 keys: 800,000 bytes), names that differ
    only in case (two pipelines, not one), text beyond Latin-1, and epoch seconds to the microsecond."""
    with scratch_database(kind, tmp_path) as (connect, placeholder):
        ledger = Ledger(connect, placeholder, clock=lambda: 1_700_000_000.123456)
        try:
            big = _events(100_000)
            ledger.acks.record("Pipe", "run-1", big, "app")
            ledger.acks.record("pipe", "run-2", _events(1), "app")
            stored = ledger.acks.acknowledged("Pipe", DAY.days(), app_id="app")
            assert len(stored) == len({e["idempotency_key"][5:21] for e in big})
            assert stored.dtype == np.uint64
            assert len(ledger.acks.acknowledged("pipe", DAY.days(), app_id="app")) == 1
            record = ledger.runs.start("Pipe", DAY, "run-1")
            ledger.runs.finish(record, "failed", {"read": 1}, None, "Heap said: ünïcödé ✓ 😀")
            (row,) = ledger.database.fetch_records(
                "SELECT message, heartbeat_epoch FROM walkme_heap_runs WHERE id = ?", [record]
            )
            assert row == {"message": "Heap said: ünïcödé ✓ 😀", "heartbeat_epoch": 1_700_000_000.123456}
        finally:
            ledger.close()


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_a_servers_budget_is_stamped_by_the_servers_clock(kind: str, tmp_path: Path) -> None:
    """The ledger's own clock is far off; the reservation is stamped by the database's (one clock for
    every worker), in epoch seconds (MariaDB: a UTC session, whatever the server's time zone)."""
    with scratch_database(kind, tmp_path) as (connect, placeholder):
        ledger = Ledger(connect, placeholder, clock=lambda: 42.0)
        try:
            granted, reservation, _ = ledger.budget.reserve("app", "h", 5, 10, window=60.0, in_flight=30.0)
            ((stamp,),) = ledger.database.fetch(f"SELECT stamp_epoch FROM {BUDGET_TABLE.name}")
            assert granted == 5 and abs(float(stamp) - 30.0 - time.time()) < 5
            ledger.budget.settle(reservation, 4)
            ((stamp, events),) = ledger.database.fetch(f"SELECT stamp_epoch, events FROM {BUDGET_TABLE.name}")
            assert events == 4 and abs(float(stamp) - time.time()) < 5
        finally:
            ledger.close()


def _mysql_connect(driver: str, database: str) -> Any:
    settings = {**MARIADB, "database": database}
    if driver == "pymysql":
        import pymysql

        return pymysql.connect(**settings)
    import mysql.connector

    return mysql.connector.connect(**settings)


@pytest.mark.parametrize("driver", ["pymysql", "mysql-connector-python"])
def test_every_mysql_driver_keeps_the_ledger(driver: str, tmp_path: Path) -> None:
    """PyMySQL (the ledger's default for a ``mysql`` connection without the MySQL provider) and
    mysql-connector-python (one of the provider's clients): the dialect is read off the connection.
    mysqlclient, the provider's default, builds against the MySQL client headers: not in the lock."""
    with scratch_database("mariadb", tmp_path) as (connect, _):
        database = _database_of(connect)
        ledger = Ledger(lambda: _mysql_connect(driver, database), "%s")
        try:
            ledger.acks.record("p", "run-1", _events(1000), "app")
            assert len(ledger.acks.acknowledged("p", DAY.days(), app_id="app")) == 1000
            record = ledger.runs.start("p", DAY, "run-1", "1/2")
            ledger.runs.finish(record, "success", {"read": 1000, "sent": 1000}, None)
            assert [(r["shard"], r["status"], r["sent"]) for r in ledger.runs.latest()] == [
                ("1/2", "success", 1000)
            ]
            granted, reservation, _ = ledger.budget.reserve("app", "h", 5, 10, window=60.0, in_flight=1.0)
            assert (granted, ledger.budget.serialisable) == (5, True)
            ledger.budget.settle(reservation, 5)
        finally:
            ledger.close()


def _database_of(connect: Any) -> str:
    connection = connect()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT DATABASE()")
        return str(cursor.fetchone()[0])
    finally:
        connection.close()


class _Wrapped:
    """A driver's connection behind a class of the caller's (a pool's proxy, a test's fault injector)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_driver_the_ledger_does_not_know_is_refused_unless_the_dialect_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    unknown = Ledger(lambda: _Wrapped(path), "?")
    with pytest.raises(UnsupportedDatabase, match=r"runs on SQLite, PostgreSQL and MySQL/MariaDB; .*tests"):
        unknown.acks.record("p", "run-1", _events(1), "app")
    named = Ledger(lambda: _Wrapped(path), "?", dialect="sqlite")
    try:
        named.acks.record("p", "run-1", _events(1), "app")
        assert len(named.acks.acknowledged("p", DAY.days(), app_id="app")) == 1
    finally:
        named.close()
    with pytest.raises(ValueError, match="unknown dialect 'oracle'"):
        Ledger(lambda: _Wrapped(path), "?", dialect="oracle")
