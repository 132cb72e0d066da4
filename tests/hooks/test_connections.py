"""Airflow connections as the core needs them: a SQL connection through its hook, or a clear error
that tells "not defined" (the ledger's embedded default applies) from "not usable"."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

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
