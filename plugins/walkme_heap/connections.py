"""What the core needs from the platform's connections, without importing the platform.

A SQL source and the ledger need a DB-API ``connect`` and the driver's placeholder; a file source
and the dead letters on object storage need an fsspec filesystem for a URL. ``hooks/connections.py``
provides them from Airflow connections (in a task, and in the API server for the report).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

FsFactory = Callable[[str], tuple[Any, str]]  # url -> (fsspec filesystem, path within it)


class ConnectionNotDefined(LookupError):
    """No connection of that id exists."""


class UnusableConnection(ValueError):
    """The connection exists but cannot serve this purpose (e.g. not a SQL connection)."""


@dataclass(frozen=True)
class SqlConnection:
    """How to open a DB-API connection, and the driver's placeholder style (``?`` or ``%s``)."""

    connect: Callable[[], Any]
    placeholder: str


class Connections(Protocol):
    def sql(self, conn_id: str) -> SqlConnection:
        """The SQL connection ``conn_id``; raises ConnectionNotDefined or UnusableConnection."""
        ...

    def filesystem(self, conn_id: str | None) -> FsFactory | None:
        """An fsspec factory using the connection's credentials (None: fsspec's own, from the URL)."""
        ...
