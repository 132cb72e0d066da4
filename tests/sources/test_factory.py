"""Where a source type is chosen: each type opens its source with the connections it names; an
unknown type or an unusable connection is a SourceError before anything is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DAY
from walkme_heap.connections import ConnectionNotDefined, FsFactory, SqlConnection, UnusableConnection
from walkme_heap.sources.base import SourceError
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.sources.factory import SOURCE_TYPES, open_source
from walkme_heap.sources.jsonl_files import JsonLinesSource
from walkme_heap.sources.spec import SourceSpec
from walkme_heap.sources.sql import SqlSource


class Connections:
    """Connections as a test defines them: SQL ones by id, and the ids asked for a filesystem."""

    def __init__(self, sql: dict[str, SqlConnection | Exception] | None = None) -> None:
        self._sql = sql or {}
        self.filesystems: list[str | None] = []

    def sql(self, conn_id: str) -> SqlConnection:
        found = self._sql.get(conn_id, ConnectionNotDefined(f"connection '{conn_id}' is not defined"))
        if isinstance(found, Exception):
            raise found
        return found

    def filesystem(self, conn_id: str | None) -> FsFactory | None:
        self.filesystems.append(conn_id)
        return self.factory

    @staticmethod
    def factory(url: str) -> tuple[Any, str]:
        raise AssertionError("not opened in these tests")


def test_the_types_are_csv_jsonl_and_sql() -> None:
    assert SOURCE_TYPES == ("csv", "jsonl", "sql")


@pytest.mark.parametrize(("kind", "cls"), [("csv", CsvSource), ("jsonl", JsonLinesSource)])
def test_file_sources_get_their_connections_filesystem(kind: str, cls: type, tmp_path: Path) -> None:
    connections = Connections()
    spec = SourceSpec(type=kind, path=str(tmp_path / "{date:%Y-%m-%d}.x"), conn_id="s3_conn", chunk_rows=7)
    source: Any = open_source(spec, DAY, connections)
    assert isinstance(source, cls) and source.chunk_rows == 7
    assert source.template == spec.path and connections.filesystems == ["s3_conn"]
    assert source.fs_factory is Connections.factory  # the connection's credentials are used


def test_a_sql_table_source_uses_the_connection_and_binds_the_window() -> None:
    sql = SqlConnection(connect=lambda: None, placeholder="%s")
    spec = SourceSpec(type="sql", conn_id="wh", table="s.events", time_column="ts", time_type="epoch_ms")
    source: Any = open_source(spec, DAY, Connections({"wh": sql}))
    assert isinstance(source, SqlSource) and source.origins() == ["wh:s.events"]
    assert source.sql == "SELECT * FROM s.events WHERE ts >= %s AND ts < %s ORDER BY ts"
    assert source.params == [DAY.start_ms, DAY.end_ms]


def test_a_sql_query_file_source(tmp_path: Path) -> None:
    query = tmp_path / "events.sql"
    query.write_text("SELECT * FROM e WHERE t >= :window_start AND t < :window_end")
    spec = SourceSpec(type="sql", conn_id="wh", query_file=str(query), time_type="epoch_s")
    source: Any = open_source(spec, DAY, Connections({"wh": SqlConnection(lambda: None, "?")}))
    assert source.origins() == ["wh:events.sql"] and source.sql.endswith("t >= ? AND t < ?")


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        (None, "connection 'wh' is not defined"),
        (UnusableConnection("connection 'wh' is not a SQL connection"), "connection 'wh' is not a SQL"),
    ],
)
def test_an_unusable_sql_connection_is_a_source_error(connection: Exception | None, message: str) -> None:
    spec = SourceSpec(type="sql", conn_id="wh", table="t", time_column="c", time_type="epoch_ms")
    with pytest.raises(SourceError, match=message):
        open_source(spec, DAY, Connections({"wh": connection} if connection else {}))


def test_an_unknown_type_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="source type must be one of csv, jsonl, sql, got 'xml'"):
        open_source(SourceSpec(type="xml", path="x"), DAY, Connections())


def test_a_spec_is_logged_as_its_settings() -> None:
    spec = SourceSpec(type="sql", conn_id="wh", table="t", time_column="c", order_by=("c", "id"))
    assert spec.settings() == {
        "type": "sql",
        "conn_id": "wh",
        "on_missing": "fail",
        "chunk_rows": 10000,
        "delimiter": ",",
        "table": "t",
        "time_column": "c",
        "time_type": "timestamptz",
        "order_by": ["c", "id"],
    }


@pytest.mark.parametrize(
    ("path", "opened"),
    [
        ("exports/{date:%Y-%m-%d}.csv", "/cfg/exports/{date:%Y-%m-%d}.csv"),  # relative: under base_dir
        ("/data/{date:%Y-%m-%d}.csv", "/data/{date:%Y-%m-%d}.csv"),
        ("s3://bucket/{date:%Y-%m-%d}.csv", "s3://bucket/{date:%Y-%m-%d}.csv"),
    ],
)
def test_a_path_is_opened_under_the_configurations_folder_unless_absolute(path: str, opened: str) -> None:
    """What a templated path renders to is only known at run time: it is located then."""
    source: Any = open_source(SourceSpec(type="csv", path=path, base_dir="/cfg"), DAY, Connections())
    assert source.template == opened


def test_an_empty_path_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="the source's path is empty"):
        open_source(SourceSpec(type="csv", path="", base_dir="/cfg"), DAY, Connections())
