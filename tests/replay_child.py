"""A replay in its own process, for the SIGKILL test: argv = csv, emulator url, ledger kind
(sqlite|postgres|mysql), sqlite path, pipeline, dead-letter location."""

from __future__ import annotations

import sys

from tests.helpers import DAY, PG_DSN, SPEC, mariadb_connect
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.ledger import Ledger
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sources.csv_files import CsvSource

path, url, kind, sqlite_path, pipeline, dead = sys.argv[1:7]
if kind == "postgres":
    import psycopg

    ledger = Ledger(lambda: psycopg.connect(PG_DSN), "%s")
elif kind == "mysql":
    ledger = Ledger(mariadb_connect, "%s")
else:
    ledger = Ledger.sqlite(sqlite_path)
replay(
    pipeline,
    CsvSource(path, DAY, chunk_rows=100),
    SPEC,
    DAY,
    HeapClient(url, "app"),
    ReplayOptions(max_events=50, max_invalid_ratio=0.5),
    ledger=ledger,
    dead_letters=DeadLetters(dead, pipeline, DAY.label),
)
