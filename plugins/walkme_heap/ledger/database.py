"""The ledger's database: one DB-API connection, its placeholder style and dialect, and the schema.

No Airflow import: the operator hands in a DB-API ``connect`` and the driver's placeholder (``?`` or
``%s``). The ledger runs on SQLite, PostgreSQL and MySQL/MariaDB, told apart by the driver's module.

The schema is SQLAlchemy Core (each store declares its ``sqlalchemy.Table`` on ``METADATA``), so each
database gets its own DDL from one declaration. The first use of the connection creates what is
missing and brings a ledger an older version created up to date (the nullable columns and the
indexes later versions added). Runtime statements stay plain DB-API on the same connection (the
hot path writes one row per acknowledged batch): written with ``?`` and translated to the driver's
style.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateColumn

from walkme_heap.connections import UnusableConnection

METADATA = sa.MetaData()

# MySQL/MariaDB: InnoDB (transactions and row locks: the budget's lock needs them), utf8mb4 whatever
# the server's default, a binary collation (pipelines, apps and holders compare exactly, as on the
# other databases), and the DYNAMIC row format, whose 3072-byte index keys fit the widest composite
# index (VARCHAR(250) + VARCHAR(10) at 4 bytes a character) even where the server's default is not.
TABLE_OPTIONS: dict[str, Any] = {
    "sqlite_autoincrement": True,  # ids never reused, as the first version's tables declared
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_row_format": "DYNAMIC",
}


def serial_id() -> sa.Column[int]:
    """The auto-incrementing primary key (SQLite: INTEGER, the rowid; elsewhere 64 bits)."""
    return sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )


def big_binary() -> sa.LargeBinary:
    """Bytes of any size a batch makes (MySQL's BLOB stops at 64 KiB: LONGBLOB there)."""
    return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def long_text() -> sa.Text:
    """JSON of unbounded length (MySQL's TEXT stops at 64 KiB: MEDIUMTEXT, 16 MiB, there)."""
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


@dataclass(frozen=True)
class Dialect:
    """What differs between databases at run time: how ids come back, the database's clock, and the
    session settings the ledger relies on."""

    name: str  # "sqlite", "postgres" or "mysql" (MySQL and MariaDB)
    sqlalchemy: str  # SQLAlchemy's dialect+driver, for the schema
    returning: bool  # INSERT ... RETURNING id (else the cursor's lastrowid)
    now: str | None = None  # the database's clock in epoch seconds (None: the ledger's clock)
    session: tuple[str, ...] = ()  # run on every new connection


_MYSQL_NOW = "UNIX_TIMESTAMP(NOW(6))"  # exact in a UTC session (no DST hour read twice)
# READ COMMITTED: every statement sees what others committed (PostgreSQL's default; InnoDB's
# REPEATABLE READ would read a snapshot and lock gaps that block other runs' inserts).
_MYSQL_SESSION = ("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", "SET time_zone = '+00:00'")
_POSTGRES_NOW = "extract(epoch from clock_timestamp())"

# A DB-API connection's module (its first part, or the first two) -> its dialect.
DRIVERS = {
    "sqlite3": Dialect("sqlite", "sqlite+pysqlite", returning=False),
    "psycopg": Dialect("postgres", "postgresql+psycopg", returning=True, now=_POSTGRES_NOW),
    "psycopg2": Dialect("postgres", "postgresql+psycopg2", returning=True, now=_POSTGRES_NOW),
    "MySQLdb": Dialect("mysql", "mysql+mysqldb", False, _MYSQL_NOW, _MYSQL_SESSION),
    "pymysql": Dialect("mysql", "mysql+pymysql", False, _MYSQL_NOW, _MYSQL_SESSION),
    "mysql.connector": Dialect("mysql", "mysql+mysqlconnector", False, _MYSQL_NOW, _MYSQL_SESSION),
}
# By name, for a connection whose class the ledger cannot place (a wrapper): ``dialect=`` says it.
DIALECTS = {"sqlite": DRIVERS["sqlite3"], "postgres": DRIVERS["psycopg"], "mysql": DRIVERS["pymysql"]}


class UnsupportedDatabase(UnusableConnection):
    """The connection's driver is not one the ledger runs on (its SQL was tested on none other)."""


def dialect_of(connection: Any) -> Dialect:
    """The dialect of a DB-API connection, from its driver's module."""
    module = type(connection).__module__
    parts = module.split(".")
    for name in (".".join(parts[:2]), parts[0]):
        if name in DRIVERS:
            return DRIVERS[name]
    raise UnsupportedDatabase(
        f"the ledger runs on SQLite, PostgreSQL and MySQL/MariaDB; this connection's driver ({module}) "
        f"is none of {', '.join(DRIVERS)}"
    )


class LedgerDatabase:
    """One connection (opened on first use), shared by the stores under one lock.

    ``dialect`` names the database (``sqlite``, ``postgres``, ``mysql``) for a connection whose
    driver module does not tell it (a wrapper); otherwise it is read off the connection.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        placeholder: str,
        tables: Sequence[sa.Table],
        dialect: str | None = None,
    ) -> None:
        if placeholder not in ("?", "%s"):
            raise ValueError(f"unsupported placeholder style {placeholder!r}")
        if dialect is not None and dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r} (known: {', '.join(DIALECTS)})")
        self._connect = connect
        self.placeholder = placeholder
        self.tables = tuple(tables)
        self._named = DIALECTS[dialect] if dialect else None
        self._connection: Any = None
        self._dialect: Dialect | None = None
        self._schema_ready = False
        self.lock = threading.Lock()

    @property
    def connection(self) -> Any:
        if self._connection is None:
            connection = self._connect()
            try:
                self._dialect = self._named or dialect_of(connection)
                self._open_session(connection)
                if not self._schema_ready:
                    ensure_schema(connection, self._dialect, self.tables)
                    self._schema_ready = True
            except BaseException:
                with suppress(Exception):
                    connection.close()
                raise
            self._connection = connection
        return self._connection

    @property
    def dialect(self) -> Dialect:
        """The connection's dialect, known once it is open (asked for every insert and budget call)."""
        if self._dialect is None:
            _ = self.connection  # opening it tells the dialect
        assert self._dialect is not None
        return self._dialect

    def _open_session(self, connection: Any) -> None:
        assert self._dialect is not None
        if self._dialect.session:
            cursor = connection.cursor()
            for statement in self._dialect.session:
                cursor.execute(statement)
            connection.commit()

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

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def ensure_schema(connection: Any, dialect: Dialect, tables: Sequence[sa.Table], attempts: int = 10) -> None:
    """Create the missing tables, and give tables an older version created the columns and indexes
    later versions added; committed on ``connection`` (the ledger's own: no second login, and a
    SQLite file or a test's wrapper sees the same session).

    Workers that open a new ledger at the same moment race between a check and its CREATE or ALTER:
    the loser's statement fails, and it checks again, finding what the winner made (each loss is an
    object someone else made, so a few attempts end it). The driver's own error is raised when it
    persists.

    SQLAlchemy works through an engine whose one pooled connection is this one; the engine is not
    disposed, which would close it.
    """
    engine = sa.create_engine(
        f"{dialect.sqlalchemy}://",
        creator=lambda: connection,
        poolclass=StaticPool,
        pool_reset_on_return=None,
    )
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                _create_and_upgrade(conn, tables)
            return
        except sa.exc.DBAPIError as error:
            if attempt == attempts - 1:
                raise error.orig from None
            time.sleep(0.05 * (attempt + 1))  # let the winner finish what it is making


def _create_and_upgrade(conn: sa.Connection, tables: Sequence[sa.Table]) -> None:
    METADATA.create_all(conn, tables=list(tables), checkfirst=True)
    inspector = sa.inspect(conn)
    for table in tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                _add_column(conn, table, column)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _add_column(conn: sa.Connection, table: sa.Table, column: sa.Column[Any]) -> None:
    """A column a later version added, on a table an earlier one created: it must be nullable, as the
    rows already there have no value for it."""
    if not column.nullable:
        raise RuntimeError(f"{table.name}.{column.name}: a column added to existing ledgers must be nullable")
    spec = CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {spec}")
