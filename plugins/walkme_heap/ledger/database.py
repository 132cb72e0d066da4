"""The ledger's database: one DB-API connection, its placeholder style and dialect, and the schema.

No Airflow import: the operator hands in a DB-API ``connect`` and the driver's placeholder (``?`` or
``%s``). Each store (``acks``, ``runs``, ``budget``) declares its table; the first use of the
connection creates what is missing and adds, to a ledger an older version created, the columns
later versions added. Statements are written with ``?`` and translated to the driver's style.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dialect:
    """What differs between databases in the ledger's SQL: column types and how ids come back."""

    name: str  # "postgres", "sqlite" or "generic"
    serial: str  # an auto-incrementing primary key
    blob: str
    real: str
    returning: bool  # INSERT ... RETURNING id (else the cursor's lastrowid)


DIALECTS = {
    "postgres": Dialect("postgres", "BIGSERIAL PRIMARY KEY", "BYTEA", "DOUBLE PRECISION", returning=True),
    "sqlite": Dialect("sqlite", "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB", "REAL", returning=False),
    "generic": Dialect("generic", "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB", "REAL", returning=False),
}
_DRIVERS = {"psycopg": "postgres", "psycopg2": "postgres", "sqlite3": "sqlite"}


def dialect_of(connection: Any) -> Dialect:
    """The dialect of a DB-API connection, from its driver's module."""
    return DIALECTS[_DRIVERS.get(type(connection).__module__.split(".")[0], "generic")]


@dataclass(frozen=True)
class Table:
    """A store's table. Column types may name ``{serial}``, ``{blob}`` and ``{real}``."""

    name: str
    columns: tuple[str, ...]  # "name TYPE ..." in order
    indexes: tuple[tuple[str, str], ...] = ()  # (name suffix, "column, column")
    added_columns: tuple[str, ...] = ()  # columns later versions added (nullable): created if missing

    def create(self, dialect: Dialect) -> str:
        columns = ", ".join(self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({columns})".format(
            serial=dialect.serial, blob=dialect.blob, real=dialect.real
        )

    def column_type(self, column: str, dialect: Dialect) -> str:
        (definition,) = [c for c in self.columns if c.split()[0] == column]
        return definition.split(None, 1)[1].format(
            serial=dialect.serial, blob=dialect.blob, real=dialect.real
        )


class LedgerDatabase:
    """One connection (opened on first use), shared by the stores under one lock."""

    def __init__(self, connect: Callable[[], Any], placeholder: str, tables: Sequence[Table]) -> None:
        if placeholder not in ("?", "%s"):
            raise ValueError(f"unsupported placeholder style {placeholder!r}")
        self._connect = connect
        self.placeholder = placeholder
        self.tables = tuple(tables)
        self._connection: Any = None
        self._dialect: Dialect | None = None
        self.lock = threading.Lock()

    @property
    def connection(self) -> Any:
        if self._connection is None:
            self._connection = self._connect()
            self._dialect = dialect_of(self._connection)
            self._ensure_schema()
        return self._connection

    @property
    def dialect(self) -> Dialect:
        """The connection's dialect, known once it is open (asked for every insert and budget call)."""
        if self._dialect is None:
            _ = self.connection  # opening it tells the dialect
        assert self._dialect is not None
        return self._dialect

    def execute(self, text: str, params: Iterable[Any] = ()) -> Any:
        """Run one statement (``?`` placeholders) and return its cursor; the caller commits."""
        cursor = self.connection.cursor()
        cursor.execute(text.replace("?", self.placeholder), list(params))
        return cursor

    def insert(self, text: str, params: Iterable[Any]) -> int:
        """Run an INSERT and return the new row's id."""
        if self.dialect.returning:
            return int(self.execute(text + " RETURNING id", params).fetchone()[0])
        return int(self.execute(text, params).lastrowid)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The lock held, committed at the end, rolled back on any error.

        The error is what propagates: a connection that cannot even roll back (its session was
        killed, the database went away) is dropped, and the next statement opens a new one.
        """
        with self.lock:
            try:
                yield
                self.connection.commit()
            except BaseException:
                if self._connection is not None:
                    try:
                        self._connection.rollback()
                    except Exception:
                        self.discard()
                raise

    def discard(self) -> None:
        """Drop the connection without using it again (it is broken): the next use opens a new one."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(Exception):  # closing a broken connection may fail too; nothing to keep
                connection.close()

    def fetch(self, text: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self.transaction():
            return self.execute(text, params).fetchall()

    def fetch_records(self, text: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts of column name -> value."""
        with self.transaction():
            cursor = self.execute(text, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def write(self, text: str, params: Iterable[Any] = ()) -> None:
        with self.transaction():
            self.execute(text, params)

    def _ensure_schema(self) -> None:
        dialect = self.dialect
        for table in self.tables:
            self._connection.cursor().execute(table.create(dialect))
            self._connection.commit()
            for column in table.added_columns:
                self._add_column(table, column, dialect)
            cursor = self._connection.cursor()
            for suffix, columns in table.indexes:
                cursor.execute(
                    f"CREATE INDEX IF NOT EXISTS {table.name}_{suffix} ON {table.name} ({columns})"
                )
            self._connection.commit()

    def _add_column(self, table: Table, column: str, dialect: Dialect) -> None:
        """Bring a table created by an earlier version up to date (a new nullable column)."""
        try:
            self._connection.cursor().execute(f"SELECT {column} FROM {table.name} WHERE 1 = 0")
            self._connection.commit()
        except Exception:
            self._connection.rollback()
            kind = table.column_type(column, dialect)
            self._connection.cursor().execute(f"ALTER TABLE {table.name} ADD COLUMN {column} {kind}")
            self._connection.commit()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
