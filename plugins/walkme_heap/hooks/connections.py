"""Airflow connections as the core needs them (``walkme_heap.connections``), in a task or in the API
server (the replay report): a SQL connection through its common-sql hook, an object-storage
connection through ``ObjectStoragePath``.

A ``mysql`` connection (MySQL or MariaDB) goes through the MySQL provider's hook where that provider
is installed. Without it, through PyMySQL (``walkme-heap[mysql]``): the provider requires
mysqlclient, which builds from source against the MySQL client headers, and a ledger on MariaDB
should not need a compiler.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from typing import Any

from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import BaseHook, ObjectStoragePath
from airflow.sdk.exceptions import AirflowNotFoundException

from walkme_heap.connections import ConnectionNotDefined, FsFactory, SqlConnection, UnusableConnection


class AirflowConnections:
    """``Connections`` from Airflow's connections (secrets backends, environment, metadata DB)."""

    def sql(self, conn_id: str) -> SqlConnection:
        try:
            connection = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            raise ConnectionNotDefined(f"connection '{conn_id}' is not defined") from None
        if connection.conn_type in MYSQL_TYPES and find_spec("airflow.providers.mysql") is None:
            return _pymysql(conn_id, connection)
        try:
            hook = BaseHook.get_hook(conn_id)
        except AirflowNotFoundException:
            raise ConnectionNotDefined(f"connection '{conn_id}' is not defined") from None
        if not isinstance(hook, DbApiHook):
            raise UnusableConnection(
                f"connection '{conn_id}' is not a SQL connection: its hook {type(hook).__name__} "
                "is not a common-sql DbApiHook"
            )
        return SqlConnection(hook.get_conn, hook.placeholder)

    def filesystem(self, conn_id: str | None) -> FsFactory | None:
        if conn_id is None:
            return None

        def factory(url: str) -> tuple[object, str]:
            path = ObjectStoragePath(url, conn_id=conn_id)
            return path.fs, path.path

        return factory


MYSQL_TYPES = ("mysql",)


def _pymysql(conn_id: str, connection: Any) -> SqlConnection:
    """A MySQL/MariaDB connection through PyMySQL, from the connection's fields as the MySQL
    provider reads them (host, port, login, password, schema; in the extra ``charset``, ``ssl``
    (a dict of ca / cert / key ...), ``unix_socket``, ``connect_timeout``)."""
    if find_spec("pymysql") is None:
        raise UnusableConnection(
            f"connection '{conn_id}' is a MySQL connection, and neither the MySQL provider nor PyMySQL "
            "is installed: pip install 'walkme-heap[mysql]'"
        )

    def connect() -> Any:
        import pymysql

        extra = connection.extra_dejson or {}
        ssl = extra.get("ssl")
        if isinstance(ssl, str):  # the MySQL provider takes it as JSON text too
            ssl = json.loads(ssl)
        options: dict[str, Any] = {"ssl": ssl} if ssl else {}
        if extra.get("unix_socket"):
            options["unix_socket"] = extra["unix_socket"]
        return pymysql.connect(
            host=connection.host or "localhost",
            port=int(connection.port or 3306),
            user=connection.login or None,
            password=connection.password or "",
            database=connection.schema or None,
            charset=extra.get("charset", "utf8mb4"),
            connect_timeout=int(extra.get("connect_timeout", 10)),
            **options,
        )

    return SqlConnection(connect, "%s")
