"""Airflow connections as the core needs them (``walkme_heap.connections``), in a task or in the API
server (the replay report): a SQL connection through its common-sql hook, an object-storage
connection through ``ObjectStoragePath``.
"""

from __future__ import annotations

from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import BaseHook, ObjectStoragePath
from airflow.sdk.exceptions import AirflowNotFoundException

from walkme_heap.connections import ConnectionNotDefined, FsFactory, SqlConnection, UnusableConnection


class AirflowConnections:
    """``Connections`` from Airflow's connections (secrets backends, environment, metadata DB)."""

    def sql(self, conn_id: str) -> SqlConnection:
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
