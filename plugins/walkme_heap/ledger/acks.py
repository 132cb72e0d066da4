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
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from walkme_heap.ledger.database import METADATA, TABLE_OPTIONS, LedgerDatabase, big_binary, serial_id
from walkme_heap.mapping.keys import key_hashes

TABLE = sa.Table(
    "walkme_heap_acks",
    METADATA,
    serial_id(),
    sa.Column("pipeline", sa.String(250), nullable=False),
    sa.Column("day", sa.String(10), nullable=False),
    sa.Column("run_id", sa.String(250)),
    sa.Column("app_id", sa.String(250)),  # added by a later version, as are acked_epoch and late_events
    sa.Column("acked_at", sa.String(40), nullable=False),
    sa.Column("acked_epoch", sa.Double()),
    sa.Column("events", sa.Integer(), nullable=False),
    sa.Column("hashes", big_binary(), nullable=False),
    # events of the row older than the sending run's window: late arrivals (the report's per-day
    # view); NULL in rows of versions that did not count them
    sa.Column("late_events", sa.Integer()),
    sa.Index("walkme_heap_acks_pipeline_day", "pipeline", "day"),
    sa.Index("walkme_heap_acks_app_time", "app_id", "acked_epoch"),
    **TABLE_OPTIONS,
)


# The run id of a run outside Airflow, as its token starts (``replay`` without ``options.run_id``).
OUTSIDE_AIRFLOW = "walkme-heap"


@dataclass
class DayArrivals:
    """How one event day of a pipeline reached Heap: on time, or late and by which Airflow run."""

    pipeline: str
    day: str
    on_time: int = 0
    late: int = 0
    # Airflow run id (None: a run outside Airflow) -> late events it sent, in the order they arrived
    late_by_run: dict[str | None, int] = field(default_factory=dict)


def airflow_run_id(run_token: str | None) -> str | None:
    """The Airflow run that sent a batch, from the sending run's token (``"{run id}#{shard}#{hex}"``):
    what a reader recognises, where the token differs for every try and shard. None outside Airflow."""
    run_id = (run_token or "").split("#", 1)[0]
    return None if run_id in ("", OUTSIDE_AIRFLOW) else run_id


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
        self,
        pipeline: str,
        run_id: str | None,
        events: list[dict[str, Any]],
        app_id: str | None = None,
        *,
        late_before: str | None = None,
    ) -> None:
        """Store one acknowledged batch (split by event day), committed before returning.

        ``late_before``: the sending run's window start as events' timestamps write it; events
        before it are counted late arrivals."""
        by_day: dict[str, list[str]] = {}
        late: dict[str, int] = {}
        for event in events:
            stamp = event["timestamp"]
            day = stamp[:10]
            by_day.setdefault(day, []).append(event["idempotency_key"])
            if late_before is not None and stamp < late_before:
                late[day] = late.get(day, 0) + 1
        now = self.clock()
        at = datetime.fromtimestamp(now, UTC).isoformat()
        with self.database.transaction():
            for day, keys in by_day.items():
                self.database.execute(
                    f"INSERT INTO {TABLE.name} (pipeline, day, run_id, app_id, acked_at, acked_epoch, "
                    "events, hashes, late_events) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        pipeline,
                        day,
                        run_id,
                        app_id,
                        at,
                        now,
                        len(keys),
                        encode_hashes(keys),
                        late.get(day, 0),
                    ],
                )

    def sent_per_day(self) -> list[tuple[str, str, str | None, int]]:
        """(pipeline, event day, Heap app, events it acknowledged), from the acknowledgements
        themselves: a day sent into two apps is two entries (None: a version that kept no app)."""
        rows = self.database.fetch(
            f"SELECT pipeline, day, app_id, sum(events) FROM {TABLE.name} GROUP BY pipeline, day, app_id "
            "ORDER BY pipeline, day, app_id"
        )
        return [(str(p), str(d), None if a is None else str(a), int(n)) for p, d, a, n in rows]

    def arrivals_per_day(self) -> list[DayArrivals]:
        """Per pipeline and event day (in that order): the events acknowledged on time, and those
        that arrived late (older than the sending run's window) per Airflow run, first arrival first.

        Summed in SQL per run token for the rows with late events only, so the rows read stay few:
        one per day of a pipeline plus one per late-sending run and day. A row of a version that did
        not count late events (NULL) is on time.
        """
        late_token = "CASE WHEN late_events > 0 THEN run_id END"
        rows = self.database.fetch(
            f"SELECT pipeline, day, {late_token} AS late_token, sum(events), "
            f"sum(COALESCE(late_events, 0)), min(id) FROM {TABLE.name} "
            f"GROUP BY pipeline, day, {late_token} ORDER BY pipeline, day, min(id)"
        )
        days: dict[tuple[str, str], DayArrivals] = {}
        for pipeline, day, token, events, late, _ in rows:
            entry = days.setdefault((str(pipeline), str(day)), DayArrivals(str(pipeline), str(day)))
            entry.on_time += int(events) - int(late)
            if late:
                run_id = airflow_run_id(token)
                entry.late += int(late)
                entry.late_by_run[run_id] = entry.late_by_run.get(run_id, 0) + int(late)
        return list(days.values())
