"""Airflow connections as the core needs them: a SQL connection through its hook (a ``mysql`` one
too: a ledger on MariaDB), or a clear error that tells "not defined" (the ledger's embedded default
applies) from "not usable"."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import DAY, MARIADB_URI, PG_DSN, mariadb_connection, postgres_connection
from walkme_heap.connections import ConnectionNotDefined, UnusableConnection
from walkme_heap.hooks.connections import AirflowConnections
from walkme_heap.ledger import open_ledger


def test_a_sql_connection_is_its_hooks_connect_and_placeholder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WH", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    sql = AirflowConnections().sql("wh")
    assert sql.placeholder == "?" and isinstance(sql.connect(), sqlite3.Connection)


def test_undefined_and_unusable_connections_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FILES", json.dumps({"conn_type": "fs"}))
    with pytest.raises(ConnectionNotDefined, match="connection 'nowhere' is not defined"):
        AirflowConnections().sql("nowhere")
    with pytest.raises(UnusableConnection, match="its hook FSHook is not a common-sql DbApiHook"):
        AirflowConnections().sql("files")


def test_the_ledger_falls_back_only_when_its_connection_is_not_defined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALKME_HEAP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW_CONN_FILES", json.dumps({"conn_type": "fs"}))
    ledger = open_ledger("walkme_heap_ledger", AirflowConnections())
    assert ledger.description == (
        f"SQLite file {tmp_path / 'home' / 'ledger.db'} (connection 'walkme_heap_ledger' is not defined)"
    )
    with pytest.raises(UnusableConnection, match="connection 'files' is not a SQL connection"):
        open_ledger("files", AirflowConnections())


def test_a_filesystem_comes_from_object_storage_with_the_connection(tmp_path: Path) -> None:
    assert AirflowConnections().filesystem(None) is None
    factory = AirflowConnections().filesystem("fs_default")
    assert factory is not None
    fs, path = factory(f"file://{tmp_path}/x.csv")
    assert path.endswith("/x.csv") and fs.exists(str(tmp_path))


# The README's connection examples, pointed at this machine's servers: (connection, driver module).
LEDGER_CONNECTIONS = {
    "sqlite": ("", "sqlite3"),  # a file of the test's own: {"conn_type": "sqlite", "host": path}
    "postgres": (PG_DSN, "psycopg"),
    "mariadb": (MARIADB_URI, "pymysql"),  # without the MySQL provider: PyMySQL
}


@pytest.mark.parametrize("kind", list(LEDGER_CONNECTIONS))
def test_the_ledger_opens_from_a_connection_to_each_database(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipeline: str
) -> None:
    """SQLite, PostgreSQL and MySQL/MariaDB connections are ledgers (a ``mysql`` one through PyMySQL
    where the MySQL provider, which needs mysqlclient built from source, is not installed)."""
    value, module = LEDGER_CONNECTIONS[kind]
    if kind == "postgres":
        postgres_connection().close()  # skips (or fails under CI=true) without a server
    elif kind.startswith("mariadb"):
        mariadb_connection().close()
    else:
        value = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")})
    monkeypatch.setenv("AIRFLOW_CONN_WALKME_HEAP_LEDGER", value)
    ledger = open_ledger("walkme_heap_ledger", AirflowConnections())
    try:
        keys = ["wmh1-5a6769b33b471622e3d23590eaeff4bd", "wmh1-cbdbf71c3ccfa9407a34361381f1a79e"]
        ledger.acks.record(
            pipeline, "run-1", [{"idempotency_key": k, "timestamp": "2024-03-10T01:00"} for k in keys]
        )
        assert ledger.acks.acknowledged(pipeline, DAY.days(), app_id=None).tolist() == [
            0x5A6769B33B471622,
            0xCBDBF71C3CCFA940,
        ]
        assert type(ledger.database.connection).__module__.startswith(module)
        assert ledger.description == "connection 'walkme_heap_ledger'"
    finally:
        ledger.database.write("DELETE FROM walkme_heap_acks WHERE pipeline = ?", [pipeline])
        ledger.close()
