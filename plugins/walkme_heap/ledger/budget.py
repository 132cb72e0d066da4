"""The stored half of a Heap app's shared rate budget: reservations, one row per batch being sent.

Every run into an app (any pipeline, day, shard or retry, on any worker) reserves the events it is
about to send here, atomically (PostgreSQL: an advisory lock per app; SQLite: an immediate
transaction), so together they never exceed the app's limit. ``delivery/budget.py`` is the other
half: the interface the pacer uses and the choice between the ways a budget is kept.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

from walkme_heap.ledger.database import LedgerDatabase, Table

TABLE = Table(
    "walkme_heap_budget",
    columns=(
        "id {serial}",
        "app_id VARCHAR(250) NOT NULL",
        "holder VARCHAR(250)",
        "events INTEGER NOT NULL",
        "stamp_epoch {real} NOT NULL",
    ),
    indexes=(("app_stamp", "app_id, stamp_epoch"),),
)
_SERIALISABLE = ("postgres", "sqlite")


class Reservations:
    """The budget table. ``clock`` is SQLite's time (PostgreSQL's clock is the database's own)."""

    def __init__(self, database: LedgerDatabase, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock

    @property
    def serialisable(self) -> bool:
        """Whether this database can serialise reservations (PostgreSQL and SQLite can)."""
        return self.database.dialect.name in _SERIALISABLE

    def _lock_app(self, app_id: str) -> float:
        """Begin a transaction that holds the app's budget alone; return the database's clock."""
        database = self.database
        if database.dialect.name == "postgres":
            cursor = database.execute(
                "SELECT pg_advisory_xact_lock(?), extract(epoch from clock_timestamp())",
                [zlib.crc32(f"walkme_heap_budget:{app_id}".encode())],
            )
            return float(cursor.fetchone()[1])
        if database.connection.in_transaction:
            database.connection.commit()
        database.connection.execute("BEGIN IMMEDIATE")  # SQLite: one writer at a time, readers wait
        return self.clock()

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
        database = self.database
        with database.transaction():
            now = self._lock_app(app_id)
            database.execute(  # reservations long expired: the table stays small
                f"DELETE FROM {TABLE.name} WHERE app_id = ? AND stamp_epoch < ?", [app_id, now - 2 * window]
            )
            rows = database.execute(
                f"SELECT stamp_epoch, events FROM {TABLE.name} WHERE app_id = ? AND stamp_epoch > ? "
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
                return 0, None, max(0.0, wait)
            granted = min(wanted, free)
            reservation = database.insert(
                f"INSERT INTO {TABLE.name} (app_id, holder, events, stamp_epoch) VALUES (?, ?, ?, ?)",
                [app_id, holder, granted, now + in_flight],
            )
        return granted, reservation, 0.0

    def settle(self, reservation: int, events: int) -> None:
        """A reservation's final size, stamped now (Heap answered): it counts one window from now."""
        if events <= 0:
            self.database.write(f"DELETE FROM {TABLE.name} WHERE id = ?", [reservation])
        elif self.database.dialect.name == "postgres":
            self.database.write(
                f"UPDATE {TABLE.name} SET events = ?, stamp_epoch = extract(epoch from clock_timestamp()) "
                "WHERE id = ?",
                [events, reservation],
            )
        else:
            self.database.write(
                f"UPDATE {TABLE.name} SET events = ?, stamp_epoch = ? WHERE id = ?",
                [events, self.clock(), reservation],
            )

    def resize(self, reservation: int, events: int) -> None:
        """Shrink a reservation that is still in flight (a batch smaller than reserved)."""
        self.database.write(f"UPDATE {TABLE.name} SET events = ? WHERE id = ?", [events, reservation])
