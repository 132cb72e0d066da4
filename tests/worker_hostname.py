"""``[core] hostname_callable`` for test deployments: two Celery workers on one machine need
different host names, or task instances cannot tell which worker ran them."""

from __future__ import annotations

import os
import socket


def get_hostname() -> str:
    return os.environ.get("WALKME_HEAP_TEST_HOSTNAME") or socket.getfqdn()
