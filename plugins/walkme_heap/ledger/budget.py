"""The stored half of a Heap app's shared rate budget: reservations, one row per batch being sent.

Every run into an app (any pipeline, day, shard or retry, on any worker) reserves the events it is
about to send here, atomically (PostgreSQL: an advisory lock per app; MySQL/MariaDB: a locked row
per app; SQLite: an immediate transaction), so together they never exceed the app's limit.
``delivery/budget.py`` is the other half: the interface the pacer uses and the choice between the
ways a budget is kept.

A reservation also holds how many of its events each identity has (``identities``: 64-bit hashes of
the identities, never the identities themselves, with counts), so every run paces each identity to
Heap's per-identity limit with what the others sent or are sending. Rows leave the table two windows
after their stamp: only identities with recent sends are known.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import sqlalchemy as sa

from walkme_heap.ledger.database import METADATA, TABLE_OPTIONS, LedgerDatabase, big_binary, serial_id

TABLE = sa.Table(
    "walkme_heap_budget",
    METADATA,
    serial_id(),
    sa.Column("app_id", sa.String(250), nullable=False),
    sa.Column("holder", sa.String(250)),
    sa.Column("events", sa.Integer(), nullable=False),
    sa.Column("stamp_epoch", sa.Double(), nullable=False),
    sa.Column("identities", big_binary()),  # added by a later version
    sa.Index("walkme_heap_budget_app_stamp", "app_id", "stamp_epoch"),
    **TABLE_OPTIONS,
)
# One row per app, locked (SELECT ... FOR UPDATE) by a reservation on MySQL/MariaDB, which have no
# transaction-scoped advisory lock: the row lock is released by the commit or rollback, or when the
# session dies, as PostgreSQL's pg_advisory_xact_lock is. Unused (empty) on the other databases.
LOCKS = sa.Table(
    "walkme_heap_budget_locks",
    METADATA,
    sa.Column("app_id", sa.String(250), primary_key=True),
    **TABLE_OPTIONS,
)
_SERIALISABLE = ("postgres", "sqlite", "mysql")

# identity hash -> [(seconds until those events leave the window, events)]
IdentityWindows = dict[int, list[tuple[float, int]]]


def encode_identities(counts: Mapping[int, int]) -> bytes:
    """Identity hashes (8 bytes each) then their counts (4 bytes each), little-endian."""
    hashes = np.fromiter(counts.keys(), dtype="<u8", count=len(counts))
    values = np.fromiter(counts.values(), dtype="<u4", count=len(counts))
    return hashes.tobytes() + values.tobytes()


def decode_identities(blob: bytes) -> dict[int, int]:
    data = bytes(blob)
    n = len(data) // 12
    hashes = np.frombuffer(data[: 8 * n], dtype="<u8")
    values = np.frombuffer(data[8 * n :], dtype="<u4")
    return dict(zip(hashes.tolist(), values.tolist(), strict=True))


class Reservations:
    """The budget table. ``clock`` is SQLite's time (PostgreSQL and MySQL use the database's own, one
    clock for every worker)."""

    def __init__(self, database: LedgerDatabase, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock

    @property
    def serialisable(self) -> bool:
        """Whether this database can serialise reservations (PostgreSQL, SQLite and MySQL can)."""
        return self.database.dialect.name in _SERIALISABLE

    def _lock_app(self, app_id: str) -> float:
        """Begin a transaction that holds the app's budget alone; return the database's clock."""
        database = self.database
        dialect = database.dialect
        if dialect.name == "postgres":
            cursor = database.execute(
                f"SELECT pg_advisory_xact_lock(?), {dialect.now}",
                [zlib.crc32(f"walkme_heap_budget:{app_id}".encode())],
            )
            return float(cursor.fetchone()[1])
        if dialect.name == "mysql":
            self._lock_row(app_id)
            return float(database.execute(f"SELECT {dialect.now}").fetchone()[0])  # after the wait
        if database.connection.in_transaction:
            database.connection.commit()
        database.connection.execute("BEGIN IMMEDIATE")  # SQLite: one writer at a time, readers wait
        return self.clock()

    def _lock_row(self, app_id: str) -> None:
        """MySQL/MariaDB: lock the app's row of the locks table until this transaction ends (another
        reservation into the app waits here). The row is made, in a transaction of its own, the
        first time an app reserves: locking a row that is not there would lock nothing, and an
        INSERT in this transaction would share the lock with another first one, then deadlock."""
        database = self.database
        locking = f"SELECT app_id FROM {LOCKS.name} WHERE app_id = ? FOR UPDATE"
        if database.execute(locking, [app_id]).fetchone() is None:
            database.execute(f"INSERT IGNORE INTO {LOCKS.name} (app_id) VALUES (?)", [app_id])
            database.connection.commit()
            if database.execute(locking, [app_id]).fetchone() is None:
                raise RuntimeError(f"the budget's lock row of app {app_id!r} could not be made")

    def reserve(
        self,
        app_id: str,
        holder: str,
        wanted: int,
        limit: int,
        window: float,
        in_flight: float,
        *,
        choose: Callable[[int, IdentityWindows], tuple[int, Mapping[int, int]]] | None = None,
        identities: bool = False,
    ) -> tuple[int, int | None, float]:
        """Reserve up to ``wanted`` events of the app's budget: (granted, reservation id, wait).

        Every reservation counts against the app while its stamp is within ``window`` seconds of
        the database's clock. A new one is stamped ``in_flight`` seconds ahead (its requests may
        still be retried that long); ``settle`` stamps it when Heap answers. A run that dies keeps
        its reservations until they expire, so a retry elsewhere cannot exceed the limit. With no
        room, ``wait`` is the seconds until one more event fits (by the database's clock).

        ``choose(room, others)`` picks the batch while the app is held (with ``identities``,
        ``others`` is the other holders' usage per identity): the reservation is what it took, with
        its identities, and no other run can pick between the choice and its record. It runs inside
        this database's transaction and lock (not reentrant): it must not use the ledger.
        """
        database = self.database
        with database.transaction():
            now = self._lock_app(app_id)
            database.execute(  # reservations long expired: the table stays small
                f"DELETE FROM {TABLE.name} WHERE app_id = ? AND stamp_epoch < ?", [app_id, now - 2 * window]
            )
            rows = database.execute(
                f"SELECT stamp_epoch, events, holder, identities FROM {TABLE.name} WHERE app_id = ? "
                "AND stamp_epoch > ? ORDER BY stamp_epoch",
                [app_id, now - window],
            ).fetchall()
            free = limit - sum(int(row[1]) for row in rows)
            if free <= 0 or wanted <= 0:
                excess = 1 - free  # events that must expire before one more fits
                wait = window
                for stamp, count, _, _ in rows:
                    excess -= int(count)
                    if excess <= 0:
                        wait = float(stamp) + window - now
                        break
                return 0, None, max(0.0, wait)
            granted, counts = min(wanted, free), None
            if choose is not None:
                others = _windows([r for r in rows if r[2] != holder], now, window) if identities else {}
                granted, counts = choose(granted, others)
                if granted <= 0:
                    return 0, None, 0.0
            reservation = database.insert(
                f"INSERT INTO {TABLE.name} (app_id, holder, events, stamp_epoch, identities) "
                "VALUES (?, ?, ?, ?, ?)",
                [app_id, holder, granted, now + in_flight, encode_identities(counts) if counts else None],
            )
        return granted, reservation, 0.0

    def settle(self, reservation: int, events: int) -> None:
        """A reservation's final size, stamped now (Heap answered): it counts one window from now."""
        if events <= 0:
            self.database.write(f"DELETE FROM {TABLE.name} WHERE id = ?", [reservation])
        elif self.database.dialect.now is not None:  # the clock ``reserve`` stamped with
            self.database.write(
                f"UPDATE {TABLE.name} SET events = ?, stamp_epoch = {self.database.dialect.now} WHERE id = ?",
                [events, reservation],
            )
        else:
            self.database.write(
                f"UPDATE {TABLE.name} SET events = ?, stamp_epoch = ? WHERE id = ?",
                [events, self.clock(), reservation],
            )

    def record(
        self, app_id: str, holder: str, events: int, identities: Mapping[int, int], window: float
    ) -> None:
        """A batch Heap acknowledged, stamped now (``clock``), for a database that cannot serialise
        reservations (other runs add it to what they observe)."""
        now = self.clock()
        blob = encode_identities(identities) if identities else None
        with self.database.transaction():
            self.database.execute(
                f"DELETE FROM {TABLE.name} WHERE app_id = ? AND stamp_epoch < ?", [app_id, now - 2 * window]
            )
            self.database.execute(
                f"INSERT INTO {TABLE.name} (app_id, holder, events, stamp_epoch, identities) "
                "VALUES (?, ?, ?, ?, ?)",
                [app_id, holder, events, now, blob],
            )

    def usage(self, app_id: str, holder: str, window: float) -> tuple[int, IdentityWindows]:
        """Other holders' events in the app's window, and per identity when they leave it (the
        observed budget's read, by ``clock``, as ``record`` stamps)."""
        now = self.clock()
        rows = self.database.fetch(
            f"SELECT stamp_epoch, events, holder, identities FROM {TABLE.name} WHERE app_id = ? "
            "AND stamp_epoch > ? AND (holder IS NULL OR holder <> ?)",
            [app_id, now - window, holder],
        )
        return sum(int(row[1]) for row in rows), _windows(rows, now, window)


def _windows(rows: list[tuple[Any, ...]], now: float, window: float) -> IdentityWindows:
    """Per identity, when the events of these (stamp, events, holder, identities) rows leave the
    window, in seconds from ``now``."""
    windows: IdentityWindows = {}
    for stamp, _events, _holder, blob in rows:
        if blob is None:
            continue
        left = float(stamp) + window - now
        for identity, count in decode_identities(blob).items():
            windows.setdefault(identity, []).append((left, count))
    return windows
