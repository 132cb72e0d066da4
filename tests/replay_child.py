"""A replay in its own process, for the SIGKILL test: argv = csv, emulator url, ledger kind
(sqlite|postgres|mysql), sqlite path, pipeline, dead-letter location."""

from __future__ import annotations

import sys

from tests.helpers import DAY, SPEC, open_ledger_of_kind
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sources.csv_files import CsvSource

path, url, kind, sqlite_path, pipeline, dead = sys.argv[1:7]
ledger = open_ledger_of_kind(kind, sqlite_path)
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
