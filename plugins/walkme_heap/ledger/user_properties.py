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
Runs into one app are serialised by the app's Airflow pool (``heap_<conn_id>``); two runs that send
the same user's property at the same moment outside it may leave the older value in Heap.
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
_IN_ONE_QUERY = 500  # identities per SELECT (bind parameters stay few on every database)


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

    def store(self, app_id: str, pipeline: str, rows: PropertyRows) -> None:
        """Store acknowledged values (or known ones with a later time), in one transaction: each
        row replaces what is there only when its event time is not older."""
        rows = list(rows)
        if not rows:
            return
        now = self.clock()
        text = self._upsert()
        with self.database.transaction():
            for identity, prop, value, ms in rows:
                self.database.execute(text, [app_id, identity, prop, value, ms, pipeline, now])

    def _upsert(self) -> str:
        insert = (
            f"INSERT INTO {TABLE.name} (app_id, identity_hash, property_hash, value_hash, event_ms, "
            "pipeline, recorded_epoch) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        if self.database.dialect.name == "mysql":
            # Assignments run left to right: value_hash is decided against the old event_ms.
            return insert + (
                " ON DUPLICATE KEY UPDATE "
                "value_hash = IF(VALUES(event_ms) >= event_ms, VALUES(value_hash), value_hash), "
                "pipeline = IF(VALUES(event_ms) >= event_ms, VALUES(pipeline), pipeline), "
                "recorded_epoch = IF(VALUES(event_ms) >= event_ms, VALUES(recorded_epoch), recorded_epoch), "
                "event_ms = GREATEST(event_ms, VALUES(event_ms))"
            )
        return insert + (
            " ON CONFLICT (app_id, identity_hash, property_hash) DO UPDATE SET "
            "value_hash = excluded.value_hash, event_ms = excluded.event_ms, pipeline = excluded.pipeline, "
            f"recorded_epoch = excluded.recorded_epoch WHERE {TABLE.name}.event_ms <= excluded.event_ms"
        )

    def users_per_app(self) -> list[tuple[str, int, int]]:
        """(Heap app, users, properties) the ledger knows, for the report."""
        rows = self.database.fetch(
            f"SELECT app_id, count(DISTINCT identity_hash), count(*) FROM {TABLE.name} "
            "GROUP BY app_id ORDER BY app_id"
        )
        return [(str(app), int(users), int(props)) for app, users, props in rows]
