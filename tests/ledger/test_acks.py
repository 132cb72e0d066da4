"""The acknowledgements store: the stored format is pinned (a change would make every existing ledger
miss and every day be sent again), and a ledger written by an older version opens, keeps what it
holds and takes the new columns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import DATABASE_KINDS, DAY, declared_schema, ledger_schema, scratch_database
from walkme_heap.ledger import Ledger

KEYS = ["wmh1-5a6769b33b471622e3d23590eaeff4bd", "wmh1-cbdbf71c3ccfa9407a34361381f1a79e"]
# The first 16 hex digits of each key's digest, as 64-bit little-endian integers, one after the other.
GOLDEN_BLOB = bytes.fromhex("2216473bb369675a40a9cf3c1cf7dbcb")


def _events(keys: list[str], day: str = "2024-03-10") -> list[dict[str, Any]]:
    return [{"idempotency_key": k, "timestamp": f"{day}T01:00:00.000+00:00"} for k in keys]


def test_the_stored_hash_format_is_pinned(tmp_path: Path) -> None:
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    ledger.acks.record("p", "run-1", _events(KEYS), "app")
    ((day, events, blob),) = ledger.database.fetch("SELECT day, events, hashes FROM walkme_heap_acks")
    assert (day, events, bytes(blob)) == ("2024-03-10", 2, GOLDEN_BLOB)
    assert ledger.acks.acknowledged("p", DAY.days(), app_id="app").tolist() == [
        0x5A6769B33B471622,
        0xCBDBF71C3CCFA940,
    ]


def test_a_batch_is_stored_per_event_day(tmp_path: Path) -> None:
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    ledger.acks.record("p", "run-1", _events(KEYS[:1]) + _events(KEYS[1:], "2024-03-11"), "app")
    rows = ledger.database.fetch("SELECT day, events FROM walkme_heap_acks ORDER BY day")
    assert rows == [("2024-03-10", 1), ("2024-03-11", 1)]
    assert len(ledger.acks.acknowledged("p", DAY.days(), app_id="app")) == 1
    assert ledger.acks.acknowledged("other", DAY.days(), app_id="app").dtype == np.uint64


def test_acknowledgements_are_per_heap_app(tmp_path: Path) -> None:
    """Heap accepts any app id silently: after the connection is pointed at another app (or a wrong
    id is corrected), what the first app acknowledged must not count as sent to the second."""
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    ledger.acks.record("p", "run-1", _events(KEYS[:1]), "app-a")
    ledger.acks.record("p", "run-2", _events(KEYS[1:]), "app-b")
    assert ledger.acks.acknowledged("p", DAY.days(), app_id="app-a").tolist() == [0x5A6769B33B471622]
    assert ledger.acks.acknowledged("p", DAY.days(), app_id="app-b").tolist() == [0xCBDBF71C3CCFA940]
    assert len(ledger.acks.acknowledged("p", DAY.days(), app_id="app-c")) == 0
    # No app given (a dry run without a Heap connection): what any app acknowledged.
    assert len(ledger.acks.acknowledged("p", DAY.days(), app_id=None)) == 2


# What the first version of the ledger created (walkme-heap c6e80b4): no app_id or acked_epoch in
# the acknowledgements, no shard in the runs, no budget table. No version before SQLAlchemy's schema
# could create a ledger on MariaDB; the same tables in its types check the upgrade all the same.
VERSION_1 = [
    "CREATE TABLE walkme_heap_acks (id {serial}, pipeline VARCHAR(250) NOT NULL, day VARCHAR(10) NOT NULL, "
    "run_id VARCHAR(250), acked_at VARCHAR(40) NOT NULL, events INTEGER NOT NULL, hashes {blob} NOT NULL)",
    "CREATE INDEX walkme_heap_acks_pipeline_day ON walkme_heap_acks (pipeline, day)",
    "CREATE TABLE walkme_heap_runs (id {serial}, pipeline VARCHAR(250) NOT NULL, "
    "window_label VARCHAR(80) NOT NULL, window_start VARCHAR(40) NOT NULL, "
    "window_end VARCHAR(40) NOT NULL, run_id VARCHAR(250), status VARCHAR(20) NOT NULL, "
    "started_at VARCHAR(40) NOT NULL, finished_at VARCHAR(40), read_rows INTEGER, "
    "sent INTEGER, already_sent INTEGER, invalid INTEGER, rejected INTEGER, "
    "skipped INTEGER, dead_letters VARCHAR(1000), message VARCHAR(2000))",
]
TYPES = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB"},
    "postgres": {"serial": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA"},
    "mariadb": {"serial": "BIGINT AUTO_INCREMENT PRIMARY KEY", "blob": "BLOB"},
}


@pytest.fixture(params=DATABASE_KINDS)
def old_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Callable[[], Any], str]]:
    """(connect, placeholder) of a database holding a version-1 ledger with one acknowledged batch."""
    kind = request.param
    with scratch_database(kind, tmp_path) as (connect, marker):
        db = connect()
        for statement in VERSION_1:
            db.cursor().execute(statement.format(**TYPES[kind]))
        columns, values = "pipeline, day, run_id, acked_at, events, hashes", ", ".join([marker] * 6)
        db.cursor().execute(
            f"INSERT INTO walkme_heap_acks ({columns}) VALUES ({values})",
            ["p", "2024-03-10", "old-run", datetime(2024, 3, 11, tzinfo=UTC).isoformat(), 2, GOLDEN_BLOB],
        )
        db.commit()
        db.close()
        yield connect, marker


def test_a_ledger_of_an_older_version_opens_and_keeps_what_it_holds(old_ledger) -> None:
    connect, placeholder = old_ledger
    ledger = Ledger(connect, placeholder)
    try:
        # What the old version acknowledged still counts, and for every app (it did not say which
        # app acknowledged it): nothing of that day is sent again, into any app, without force.
        legacy = [0x5A6769B33B471622, 0xCBDBF71C3CCFA940]
        for app in ("app", "another-app", None):
            assert ledger.acks.acknowledged("p", DAY.days(), app_id=app).tolist() == legacy
        # The columns added since are there, and every store works on the old tables.
        ledger.acks.record("p", "new-run", _events(["wmh1-" + "0" * 32]), "app")
        assert len(ledger.acks.acknowledged("p", DAY.days(), app_id="app")) == 3
        assert len(ledger.acks.acknowledged("p", DAY.days(), app_id="another-app")) == 2
        record = ledger.runs.start("p", DAY, "new-run", "1/2")
        ledger.runs.finish(record, "success", {"read": 1, "sent": 1}, None)
        assert [(r["window_label"], r["shard"], r["status"]) for r in ledger.runs.latest()] == [
            ("2024-03-10", "1/2", "success")
        ]
        assert ledger.budget.reserve("app", "h", 5, 10, window=60.0, in_flight=1.0)[0] == 5
    finally:
        ledger.close()
    # What later versions added is there as the current version declares it: columns and indexes.
    assert ledger_schema(connect) == declared_schema()
