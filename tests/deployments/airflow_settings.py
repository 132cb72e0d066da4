"""Settings that test deployments import by name (``AIRFLOW__...`` variables point here)."""

from __future__ import annotations

import os
import socket

# [database] sql_alchemy_connect_args for a SQLite metadata database shared by a scheduler, an API
# server and CLI commands: wait up to a minute for a writer instead of failing "database is locked"
# after pysqlite's default five seconds.
SQLITE_CONNECT_ARGS = {"timeout": 60}
SQLITE_CONNECT_ARGS_ASYNC = {"timeout": 60}


def get_hostname() -> str:
    """[core] hostname_callable: two Celery workers on one machine need different host names, or
    task instances cannot tell which worker ran them."""
    return os.environ.get("WALKME_HEAP_TEST_HOSTNAME") or socket.getfqdn()
