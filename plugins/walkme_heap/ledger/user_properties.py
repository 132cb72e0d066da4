"""What Heap holds of each user's properties, per Heap app: one row per app, identity and property
with a hash of the value Heap acknowledged and the event time it came from.

It lets a run send a user only when a property changed, and never overwrite a value that came from a
later event (backfills run days out of order): a run sends a property when the ledger knows none, or
knows one from an earlier or the same event time with another value. A value equal to the known one
from a later event moves the known time on (``advance``), so an older day run afterwards does not
send its older value.

Identities, property names and values are stored as hashes (personal data stays out of the ledger).
Rows are written by one conditional upsert each (the newer event time wins), after Heap acknowledged
the request: a run killed between the answer and the write sends those users once more, no more.
Two runs that send the same user's property at the same moment (overlapping days of a backfill, two
pipelines into one app) cannot tell in which order Heap applied them: when the older value's row is
written after the newer's, the row is marked unknown (``STALE``) and the next run whose window holds
the user sends its value again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from walkme_heap.ledger.database import METADATA, TABLE_OPTIONS, LedgerDatabase

TABLE = sa.Table(
    "walkme_heap_user_properties",
    METADATA,
    sa.Column("app_id", sa.String(250), primary_key=True),
    sa.Column("identity_hash", sa.String(32), primary_key=True),
    sa.Column("property_hash", sa.String(32), primary_key=True),
    sa.Column("value_hash", sa.String(32), nullable=False),
    sa.Column("event_ms", sa.BigInteger(), nullable=False),
    sa.Column("pipeline", sa.String(250)),
    sa.Column("recorded_epoch", sa.Double()),
    **TABLE_OPTIONS,
)
_IN_ONE_QUERY = 500
# A value hash no value has: what Heap holds is not known, so the next run sends its value.
STALE = "unknown"  # no ? in it: the statement's placeholders are ?


def digest(text: str) -> str:
    """128 bits of SHA-256, hex: identities and property names as the ledger keeps them."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def value_hash(value: Any) -> str:
    """A value as Heap receives it (its JSON), hashed: ``1`` and ``"1"`` differ, as in Heap."""
    return hashlib.sha256(orjson.dumps(value)).hexdigest()[:32]


@dataclass(frozen=True)
class Known:
    """What the ledger holds for one user property: the value's hash and its event time."""

    value_hash: str
    event_ms: int


# (identity hash, property hash) -> what Heap holds
KnownProperties = dict[tuple[str, str], Known]
# (identity hash, property hash, value hash, event ms) for each property to store
PropertyRows = Iterable[tuple[str, str, str, int]]


class UserPropertyStates:
    """The user properties table: read before each request, written after Heap acknowledges it."""

    def __init__(self, database: LedgerDatabase, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock

    def known(self, app_id: str, identity_hashes: Iterable[str]) -> KnownProperties:
        """What the ledger holds for these identities in Heap app ``app_id``."""
        wanted = sorted(set(identity_hashes))
        known: KnownProperties = {}
        for start in range(0, len(wanted), _IN_ONE_QUERY):
            part = wanted[start : start + _IN_ONE_QUERY]
            rows = self.database.fetch(
                f"SELECT identity_hash, property_hash, value_hash, event_ms FROM {TABLE.name} "
                f"WHERE app_id = ? AND identity_hash IN ({', '.join('?' for _ in part)})",
                [app_id, *part],
            )
            for identity, prop, value, ms in rows:
                known[(str(identity), str(prop))] = Known(str(value), int(ms))
        return known

    def store(self, app_id: str, pipeline: str, rows: PropertyRows, *, sent: bool = True) -> int:
        """Store values Heap acknowledged (``sent``), or known values that only get a later event
        time (not ``sent``), in one transaction; a row replaces what is there only when its event
        time is not older.

        A value Heap acknowledged whose row is already newer (another run recorded a value from a
        later event while this one's request was out) may have landed after that newer value: Heap
        may now hold the older one. The row is then marked unknown (``STALE``), so the next run whose
        window holds that user sends its value again, and the count of such rows is returned (the
        caller warns)."""
        rows = list(rows)
        if not rows:
            return 0
        stale = self._older_than_known(app_id, rows) if sent else 0
        now = self.clock()
        text = self._upsert(sent).replace("?", self.database.placeholder)
        with self.database.transaction():
            self.database.connection.cursor().executemany(
                text,
                [[app_id, identity, prop, value, ms, pipeline, now] for identity, prop, value, ms in rows],
            )
        return stale

    def _older_than_known(self, app_id: str, rows: list[tuple[str, str, str, int]]) -> int:
        """How many of the acknowledged ``rows`` are older than a different value the ledger holds."""
        known = self.known(app_id, (identity for identity, _, _, _ in rows))
        return sum(
            1
            for identity, prop, value, ms in rows
            if (held := known.get((identity, prop))) is not None
            and held.event_ms > ms
            and held.value_hash != value
        )

    def _upsert(self, sent: bool) -> str:
        """One row: inserted, or replacing an older one; an acknowledged value older than the row
        there (another value) marks it ``STALE``."""
        insert = (
            f"INSERT INTO {TABLE.name} (app_id, identity_hash, property_hash, value_hash, event_ms, "
            "pipeline, recorded_epoch) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        older = "'" + STALE + "'" if sent else None
        if self.database.dialect.name == "mysql":
            # Assignments run left to right: everything is decided against the old event_ms first.
            kept = f"IF(value_hash = VALUES(value_hash), value_hash, {older})" if older else "value_hash"
            return insert + (
                " ON DUPLICATE KEY UPDATE "
                f"value_hash = IF(VALUES(event_ms) >= event_ms, VALUES(value_hash), {kept}), "
                "pipeline = IF(VALUES(event_ms) >= event_ms, VALUES(pipeline), pipeline), "
                "recorded_epoch = IF(VALUES(event_ms) >= event_ms, VALUES(recorded_epoch), recorded_epoch), "
                "event_ms = GREATEST(event_ms, VALUES(event_ms))"
            )
        t = TABLE.name
        newer = f"{t}.event_ms <= excluded.event_ms"
        kept = f"WHEN {t}.value_hash = excluded.value_hash THEN {t}.value_hash ELSE {older} " if older else ""
        return insert + (
            " ON CONFLICT (app_id, identity_hash, property_hash) DO UPDATE SET "
            f"value_hash = CASE WHEN {newer} THEN excluded.value_hash {kept or f'ELSE {t}.value_hash '}END, "
            f"event_ms = CASE WHEN {newer} THEN excluded.event_ms ELSE {t}.event_ms END, "
            f"pipeline = CASE WHEN {newer} THEN excluded.pipeline ELSE {t}.pipeline END, "
            f"recorded_epoch = CASE WHEN {newer} THEN excluded.recorded_epoch ELSE {t}.recorded_epoch END"
        )

    def users_per_app(self) -> list[tuple[str, int, int]]:
        """(Heap app, users, properties) the ledger knows, for the report."""
        rows = self.database.fetch(
            f"SELECT app_id, count(DISTINCT identity_hash), count(*) FROM {TABLE.name} "
            "GROUP BY app_id ORDER BY app_id"
        )
        return [(str(app), int(users), int(props)) for app, users, props in rows]
