"""What Heap acknowledged: the idempotency keys of every acknowledged batch, per pipeline and UTC day.

One row per acknowledged batch and event day holds the 64-bit hashes of the batch's keys (8 bytes
an event, little-endian: ``encode_hashes``) and the Heap app that acknowledged them. It is written
right after Heap acknowledges each batch, so a run killed at any moment loses at most the batch in
flight (Heap drops that repeat by key). A run loads the hashes its app holds for its window's days
once and filters each chunk against them.

The stored format is pinned by a golden test: changing it would make every existing ledger miss
and every day be sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from walkme_heap.ledger.database import LedgerDatabase, Table
from walkme_heap.mapping.keys import key_hashes

TABLE = Table(
    "walkme_heap_acks",
    columns=(
        "id {serial}",
        "pipeline VARCHAR(250) NOT NULL",
        "day VARCHAR(10) NOT NULL",
        "run_id VARCHAR(250)",
        "app_id VARCHAR(250)",
        "acked_at VARCHAR(40) NOT NULL",
        "acked_epoch {real}",
        "events INTEGER NOT NULL",
        "hashes {blob} NOT NULL",
    ),
    indexes=(("pipeline_day", "pipeline, day"), ("app_time", "app_id, acked_epoch")),
    added_columns=("app_id", "acked_epoch"),
)


def encode_hashes(keys: list[str]) -> bytes:
    """The stored form of a batch's keys: their 64-bit hashes, little-endian."""
    return key_hashes(keys).astype("<u8").tobytes()


def decode_hashes(blob: bytes) -> np.ndarray:
    return np.frombuffer(bytes(blob), dtype="<u8").astype(np.uint64)


class Acknowledgements:
    """The acknowledgements table: written after each batch, read once per run."""

    def __init__(self, database: LedgerDatabase, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock

    def acknowledged(self, pipeline: str, days: Iterable[date], *, app_id: str | None) -> np.ndarray:
        """Sorted hashes of every event Heap app ``app_id`` acknowledged for these days.

        Per app, because Heap accepts any app id silently: what one app holds is not in another.
        Rows of versions that did not record the app (NULL) count for every app, so an upgrade
        never sends a day twice into the app it went to. ``app_id=None`` (a dry run that knows no
        app): what any app acknowledged.
        """
        labels = [d.isoformat() for d in days]
        if not labels:
            return np.empty(0, dtype=np.uint64)
        marks = ", ".join("?" for _ in labels)
        text = f"SELECT hashes FROM {TABLE.name} WHERE pipeline = ? AND day IN ({marks})"
        params: list[Any] = [pipeline, *labels]
        if app_id is not None:
            text += " AND (app_id = ? OR app_id IS NULL)"
            params.append(app_id)
        rows = self.database.fetch(text, params)
        if not rows:
            return np.empty(0, dtype=np.uint64)
        return np.unique(np.concatenate([decode_hashes(blob) for (blob,) in rows]))

    def record(
        self, pipeline: str, run_id: str | None, events: list[dict[str, Any]], app_id: str | None = None
    ) -> None:
        """Store one acknowledged batch (split by event day), committed before returning."""
        by_day: dict[str, list[str]] = {}
        for event in events:
            by_day.setdefault(event["timestamp"][:10], []).append(event["idempotency_key"])
        now = self.clock()
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        with self.database.transaction():
            for day, keys in by_day.items():
                self.database.execute(
                    f"INSERT INTO {TABLE.name} (pipeline, day, run_id, app_id, acked_at, acked_epoch, "
                    "events, hashes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [pipeline, day, run_id, app_id, stamp, now, len(keys), encode_hashes(keys)],
                )

    def sent_per_day(self) -> list[tuple[str, str, str | None, int]]:
        """(pipeline, event day, Heap app, events it acknowledged), from the acknowledgements
        themselves: a day sent into two apps is two entries (None: a version that kept no app)."""
        rows = self.database.fetch(
            f"SELECT pipeline, day, app_id, sum(events) FROM {TABLE.name} GROUP BY pipeline, day, app_id "
            "ORDER BY pipeline, day, app_id"
        )
        return [(str(p), str(d), None if a is None else str(a), int(n)) for p, d, a, n in rows]
