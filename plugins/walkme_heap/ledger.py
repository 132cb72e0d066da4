"""The ledger: which events Heap acknowledged, per pipeline and UTC day, in a SQL database.

One row per acknowledged batch and event day holds the 64-bit hashes of the batch's idempotency
keys (8 bytes an event, little-endian). It is written right after Heap acknowledges each batch, so a
run killed at any moment loses at most the batch in flight (Heap drops that repeat by key). A run
loads the hashes of its window's days once and filters each chunk against them with numpy.

A second table keeps one row per run (status, counts, dead-letter location) for reports, and a
third is the shared rate budget of each Heap app: every run (any pipeline, day, shard or retry, on
any worker) reserves the events it is about to send there, atomically, so together they never exceed
the app's limit (PostgreSQL: an advisory lock per app; SQLite: an immediate transaction).
No Airflow import: the operator hands in a DB-API ``connect`` and the driver's placeholder.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from walkme_heap.mapping.keys import key_hashes

DEFAULT_LEDGER_CONN_ID = "walkme_heap_ledger"
BATCHES = "walkme_heap_acks"
RUNS = "walkme_heap_runs"
BUDGET = "walkme_heap_budget"


def _dialect(connection: Any) -> str:
    module = type(connection).__module__.split(".")[0]
    if module in ("psycopg", "psycopg2"):
        return "postgres"
    if module in ("sqlite3",):
        return "sqlite"
    return "generic"


class Ledger:
    """Acknowledged events and run records, through any DB-API connection."""

    def __init__(self, connect: Callable[[], Any], placeholder: str = "?") -> None:
        if placeholder not in ("?", "%s"):
            raise ValueError(f"unsupported placeholder style {placeholder!r}")
        self._connect = connect
        self._placeholder = placeholder
        self._connection: Any = None
        self._lock = threading.Lock()

    @classmethod
    def sqlite(cls, path: str) -> Ledger:
        """The embedded default: a SQLite file (waits up to 30 s for another writer)."""
        return cls(lambda: sqlite3.connect(path, timeout=30), "?")

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def connection(self) -> Any:
        if self._connection is None:
            self._connection = self._connect()
            self._ensure_schema()
        return self._connection

    def _sql(self, text: str) -> str:
        return text.replace("?", self._placeholder)

    def _execute(self, text: str, params: Iterable[Any] = ()) -> Any:
        cursor = self.connection.cursor()
        cursor.execute(self._sql(text), list(params))
        return cursor

    def _ensure_schema(self) -> None:
        dialect = _dialect(self._connection)
        blob = "BYTEA" if dialect == "postgres" else "BLOB"
        real = "DOUBLE PRECISION" if dialect == "postgres" else "REAL"
        serial = "BIGSERIAL PRIMARY KEY" if dialect == "postgres" else "INTEGER PRIMARY KEY AUTOINCREMENT"
        cursor = self._connection.cursor()
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {BATCHES} (id {serial}, pipeline VARCHAR(250) NOT NULL, "
            f"day VARCHAR(10) NOT NULL, run_id VARCHAR(250), app_id VARCHAR(250), "
            f"acked_at VARCHAR(40) NOT NULL, acked_epoch {real}, events INTEGER NOT NULL, "
            f"hashes {blob} NOT NULL)"
        )
        self._connection.commit()
        self._add_columns(BATCHES, {"app_id": "VARCHAR(250)", "acked_epoch": real})
        cursor = self._connection.cursor()
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {BATCHES}_pipeline_day ON {BATCHES} (pipeline, day)")
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {BATCHES}_app_time ON {BATCHES} (app_id, acked_epoch)")
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {RUNS} (id {serial}, pipeline VARCHAR(250) NOT NULL, "
            "window_label VARCHAR(80) NOT NULL, window_start VARCHAR(40) NOT NULL, "
            "window_end VARCHAR(40) NOT NULL, run_id VARCHAR(250), status VARCHAR(20) NOT NULL, "
            "started_at VARCHAR(40) NOT NULL, finished_at VARCHAR(40), read_rows INTEGER, "
            "sent INTEGER, already_sent INTEGER, invalid INTEGER, rejected INTEGER, "
            "skipped INTEGER, dead_letters VARCHAR(1000), message VARCHAR(2000))"
        )
        self._connection.commit()
        self._add_columns(RUNS, {"shard": "VARCHAR(20)"})
        cursor = self._connection.cursor()
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {BUDGET} (id {serial}, app_id VARCHAR(250) NOT NULL, "
            f"holder VARCHAR(250), events INTEGER NOT NULL, stamp_epoch {real} NOT NULL)"
        )
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {BUDGET}_app_stamp ON {BUDGET} (app_id, stamp_epoch)")
        self._connection.commit()

    def _add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Bring a ledger created by an earlier version up to date (new nullable columns)."""
        for name, kind in columns.items():
            cursor = self._connection.cursor()
            try:
                cursor.execute(f"SELECT {name} FROM {table} WHERE 1 = 0")
                self._connection.commit()
            except Exception:
                self._connection.rollback()
                self._connection.cursor().execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                self._connection.commit()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- acknowledged events ----------------------------------------------------------------------
    def acknowledged(self, pipeline: str, days: Iterable[date]) -> np.ndarray:
        """Sorted hashes of every event acknowledged for these days."""
        labels = [d.isoformat() for d in days]
        if not labels:
            return np.empty(0, dtype=np.uint64)
        marks = ", ".join("?" for _ in labels)
        with self._lock:
            rows = self._execute(
                f"SELECT hashes FROM {BATCHES} WHERE pipeline = ? AND day IN ({marks})",
                [pipeline, *labels],
            ).fetchall()
            self.connection.commit()
        if not rows:
            return np.empty(0, dtype=np.uint64)
        arrays = [np.frombuffer(bytes(blob), dtype="<u8") for (blob,) in rows]
        return np.unique(np.concatenate(arrays).astype(np.uint64))

    def record(
        self, pipeline: str, run_id: str | None, events: list[dict[str, Any]], app_id: str | None = None
    ) -> None:
        """Store one acknowledged batch (split by event day), committed before returning."""
        by_day: dict[str, list[str]] = {}
        for event in events:
            by_day.setdefault(event["timestamp"][:10], []).append(event["idempotency_key"])
        now = datetime.now(UTC)
        with self._lock:
            for day, keys in by_day.items():
                blob = key_hashes(keys).astype("<u8").tobytes()
                self._execute(
                    f"INSERT INTO {BATCHES} (pipeline, day, run_id, app_id, acked_at, acked_epoch, events, "
                    "hashes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [pipeline, day, run_id, app_id, now.isoformat(), now.timestamp(), len(keys), blob],
                )
            self.connection.commit()

    def app_usage(self, app_id: str, since_epoch: float, exclude_run: str | None) -> list[tuple[float, int]]:
        """(acknowledged at, events) of other runs into this Heap app since a time: the shared budget."""
        with self._lock:
            rows = self._execute(
                f"SELECT acked_epoch, events FROM {BATCHES} WHERE app_id = ? AND acked_epoch > ? "
                "AND (run_id IS NULL OR run_id <> ?)",
                [app_id, since_epoch, exclude_run or ""],
            ).fetchall()
            self.connection.commit()
        return [(float(t), int(n)) for t, n in rows]

    # -- the shared rate budget of a Heap app -----------------------------------------------------
    @property
    def shares_budget(self) -> bool:
        """Whether this database can serialise reservations (PostgreSQL and SQLite can)."""
        return _dialect(self.connection) in ("postgres", "sqlite")

    def _lock_app(self, app_id: str) -> float:
        """Begin a transaction that holds the app's budget alone; return the database's clock."""
        if _dialect(self.connection) == "postgres":
            cursor = self._execute(
                "SELECT pg_advisory_xact_lock(?), extract(epoch from clock_timestamp())",
                [zlib.crc32(f"walkme_heap_budget:{app_id}".encode())],
            )
            return float(cursor.fetchone()[1])
        if self.connection.in_transaction:
            self.connection.commit()
        self.connection.execute("BEGIN IMMEDIATE")  # SQLite: one writer at a time, readers wait
        return time.time()

    def reserve(
        self, app_id: str, holder: str, wanted: int, limit: int, window: float, in_flight: float
    ) -> tuple[int, int | None, float]:
        """Reserve up to ``wanted`` events of the app's budget: (granted, reservation id, wait).

        Every reservation counts against the app while its stamp is within ``window`` seconds of
        the database's clock. A new one is stamped ``in_flight`` seconds ahead (its requests may
        still be retried that long); ``settle`` stamps it when Heap answers. A run that dies keeps
        its reservations until they expire, so a retry elsewhere cannot exceed the limit. With no
        room, ``wait`` is the seconds until one more event fits (by the database's clock).
        """
        with self._lock:
            try:
                now = self._lock_app(app_id)
                self._execute(  # reservations long expired: the table stays small
                    f"DELETE FROM {BUDGET} WHERE app_id = ? AND stamp_epoch < ?", [app_id, now - 2 * window]
                )
                rows = self._execute(
                    f"SELECT stamp_epoch, events FROM {BUDGET} WHERE app_id = ? AND stamp_epoch > ? "
                    "ORDER BY stamp_epoch",
                    [app_id, now - window],
                ).fetchall()
                free = limit - sum(int(n) for _, n in rows)
                if free <= 0 or wanted <= 0:
                    excess = 1 - free  # events that must expire before one more fits
                    wait = window
                    for stamp, count in rows:
                        excess -= int(count)
                        if excess <= 0:
                            wait = float(stamp) + window - now
                            break
                    self.connection.commit()
                    return 0, None, max(0.0, wait)
                granted = min(wanted, free)
                returning = " RETURNING id" if _dialect(self.connection) == "postgres" else ""
                cursor = self._execute(
                    f"INSERT INTO {BUDGET} (app_id, holder, events, stamp_epoch) "
                    f"VALUES (?, ?, ?, ?){returning}",
                    [app_id, holder, granted, now + in_flight],
                )
                row_id = int(cursor.fetchone()[0] if returning else cursor.lastrowid)
                self.connection.commit()
            except BaseException:
                self.connection.rollback()
                raise
        return granted, row_id, 0.0

    def settle(self, reservation: int, events: int) -> None:
        """A reservation's final size, stamped now (Heap answered): it counts one window from now."""
        with self._lock:
            if events <= 0:
                self._execute(f"DELETE FROM {BUDGET} WHERE id = ?", [reservation])
            elif _dialect(self.connection) == "postgres":
                self._execute(
                    f"UPDATE {BUDGET} SET events = ?, stamp_epoch = extract(epoch from clock_timestamp()) "
                    "WHERE id = ?",
                    [events, reservation],
                )
            else:
                self._execute(
                    f"UPDATE {BUDGET} SET events = ?, stamp_epoch = ? WHERE id = ?",
                    [events, time.time(), reservation],
                )
            self.connection.commit()

    def resize(self, reservation: int, events: int) -> None:
        """Shrink a reservation that is still in flight (a batch smaller than reserved)."""
        with self._lock:
            self._execute(f"UPDATE {BUDGET} SET events = ? WHERE id = ?", [events, reservation])
            self.connection.commit()

    def budget_used(self, app_id: str, window: float) -> int:
        """Events counted against the app now (reports and tests)."""
        with self._lock:
            rows = self._execute(
                f"SELECT stamp_epoch, events FROM {BUDGET} WHERE app_id = ?", [app_id]
            ).fetchall()
            self.connection.commit()
        now = time.time()
        return sum(int(n) for t, n in rows if float(t) > now - window)

    # -- runs --------------------------------------------------------------------------------------
    def start_run(
        self, pipeline: str, label: str, start: str, end: str, run_id: str | None, shard: str | None = None
    ) -> int:
        returning = " RETURNING id" if _dialect(self.connection) == "postgres" else ""
        with self._lock:
            cursor = self._execute(
                f"INSERT INTO {RUNS} (pipeline, window_label, window_start, window_end, run_id, status, "
                f"started_at, shard) VALUES (?, ?, ?, ?, ?, 'running', ?, ?){returning}",
                [pipeline, label, start, end, run_id, datetime.now(UTC).isoformat(), shard],
            )
            row_id = cursor.fetchone()[0] if returning else cursor.lastrowid
            self.connection.commit()
        return int(row_id)

    def finish_run(
        self, row_id: int, status: str, counts: dict[str, Any], dead_letters: str | None, message: str = ""
    ) -> None:
        with self._lock:
            self._execute(
                f"UPDATE {RUNS} SET status = ?, finished_at = ?, read_rows = ?, sent = ?, already_sent = ?, "
                "invalid = ?, rejected = ?, skipped = ?, dead_letters = ?, message = ? WHERE id = ?",
                [
                    status,
                    datetime.now(UTC).isoformat(),
                    counts.get("read"),
                    counts.get("sent"),
                    counts.get("already_sent"),
                    counts.get("invalid"),
                    counts.get("rejected"),
                    counts.get("skipped"),
                    dead_letters,
                    message[:2000],
                    row_id,
                ],
            )
            self.connection.commit()

    def runs(self, pipeline: str | None = None) -> list[dict[str, Any]]:
        """Run records, newest first (for reports and tests)."""
        where, params = ("WHERE pipeline = ?", [pipeline]) if pipeline else ("", [])
        with self._lock:
            cursor = self._execute(f"SELECT * FROM {RUNS} {where} ORDER BY id DESC", params)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            self.connection.commit()
        return rows

    # -- reports -----------------------------------------------------------------------------------
    def latest_runs(self) -> list[dict[str, Any]]:
        """The newest run of each pipeline, window and shard, newest windows first."""
        with self._lock:
            cursor = self._execute(
                f"SELECT r.* FROM {RUNS} r JOIN (SELECT max(id) AS id FROM {RUNS} "
                "GROUP BY pipeline, window_label, COALESCE(shard, '')) m ON r.id = m.id "
                "ORDER BY r.pipeline, r.window_start DESC, r.shard"
            )
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            self.connection.commit()
        return rows

    def sent_per_day(self) -> list[tuple[str, str, int]]:
        """(pipeline, event day, events Heap acknowledged), from the acknowledgements themselves."""
        with self._lock:
            rows = self._execute(
                f"SELECT pipeline, day, sum(events) FROM {BATCHES} "
                "GROUP BY pipeline, day ORDER BY pipeline, day"
            ).fetchall()
            self.connection.commit()
        return [(str(p), str(d), int(n)) for p, d, n in rows]
