"""The ledger: what Heap acknowledged, which runs ran, and the apps' shared rate budgets, in SQL
(SQLite, PostgreSQL or MySQL/MariaDB).

Four stores over one database (``database.py``), a module each:

- ``acks.py``: the idempotency keys Heap acknowledged, per pipeline, Heap app and event day (exactly
  once);
- ``runs.py``: one record per run (status, counts, dead letters, heartbeat), for the replay report;
- ``budget.py``: reservations of each Heap app's rate budget, shared by every run into the app;
- ``user_properties.py``: per Heap app, identity and property, what Heap holds (hashes and the
  event time of the value), so only changed user properties are sent.

``open_ledger`` is the one way a task and the report find the ledger.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from walkme_heap.connections import ConnectionNotDefined, Connections
from walkme_heap.home import default_ledger_path
from walkme_heap.ledger import acks, budget, runs, user_properties
from walkme_heap.ledger.acks import Acknowledgements
from walkme_heap.ledger.budget import Reservations
from walkme_heap.ledger.database import LedgerDatabase
from walkme_heap.ledger.runs import RunRecords
from walkme_heap.ledger.user_properties import UserPropertyStates

log = logging.getLogger(__name__)
TABLES = (acks.TABLE, runs.TABLE, budget.TABLE, budget.LOCKS, user_properties.TABLE)


class Ledger:
    """The four stores over one DB-API connection (``connect``, the driver's placeholder) to SQLite,
    PostgreSQL or MySQL/MariaDB.

    ``clock`` is the wall clock the stores stamp with (the budget on PostgreSQL and MySQL uses the
    database's). ``description`` says which database this is, for logs and the report; ``location``
    tells two ledgers apart (a connection id, or a SQLite file's path). ``dialect`` (``sqlite``,
    ``postgres``, ``mysql``) only for a connection whose driver module does not tell it (a wrapper).
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        placeholder: str = "?",
        *,
        clock: Callable[[], float] = time.time,
        description: str = "",
        location: str = "",
        dialect: str | None = None,
    ) -> None:
        self.database = LedgerDatabase(connect, placeholder, TABLES, dialect)
        self.acks = Acknowledgements(self.database, clock)
        self.runs = RunRecords(self.database, clock)
        self.budget = Reservations(self.database, clock)
        self.user_properties = UserPropertyStates(self.database, clock)
        self.description = description
        self.location = location or description

    @classmethod
    def sqlite(cls, path: str, *, clock: Callable[[], float] = time.time, description: str = "") -> Ledger:
        """The embedded default: a SQLite file (waits up to 30 s for another writer)."""
        return cls(
            lambda: sqlite3.connect(path, timeout=30),
            "?",
            clock=clock,
            description=description or f"SQLite file {path}",
            location=f"sqlite:{Path(path).resolve()}",
        )

    def close(self) -> None:
        self.database.close()


def open_ledger(conn_id: str, connections: Connections) -> Ledger:
    """The ledger of connection ``conn_id``; where no such connection is defined, the embedded
    SQLite file under ``WALKME_HEAP_HOME`` (said in the log and the report). A connection that is
    defined but not usable raises ``UnusableConnection``: never a silent switch to another ledger.
    """
    try:
        sql = connections.sql(conn_id)
    except ConnectionNotDefined:
        path = default_ledger_path()
        log.info("ledger: connection '%s' is not defined; using %s", conn_id, path)
        return Ledger.sqlite(
            str(path), description=f"SQLite file {path} (connection '{conn_id}' is not defined)"
        )
    return Ledger(sql.connect, sql.placeholder, description=f"connection '{conn_id}'", location=conn_id)
