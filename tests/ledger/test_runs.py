"""Run records: a try that died (its worker killed, its pod lost) leaves its record ``running``;
once the record's heartbeat, or the start of a record an older version wrote, is older than the
heartbeat timeout, the record is ``abandoned``, so the replay report shows what happened."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import DAY, PG_DSN, FakeClock, mariadb_ledger, postgres_connection, run_records
from walkme_heap.ledger import Ledger
from walkme_heap.ledger.runs import HEARTBEAT_TIMEOUT


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def clocked(
    request: pytest.FixtureRequest, tmp_path: Path, pipeline: str
) -> Iterator[tuple[Ledger, FakeClock]]:
    """A ledger (SQLite, then the shared PostgreSQL, then the shared MariaDB) whose records are
    stamped by a made-up clock far in the future, so that replays of other tests, which abandon
    stale records by the real clock, leave this test's records alone; they are deleted at the end."""
    clock = FakeClock(epoch=4_000_000_000.0)
    if request.param == "sqlite":
        store = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
    elif request.param == "mariadb":
        store = mariadb_ledger(clock=clock.time)
    else:
        import psycopg

        postgres_connection().close()  # skips (or fails under CI=true) without a server
        store = Ledger(lambda: psycopg.connect(PG_DSN), "%s", clock=clock.time)
    yield store, clock
    store.database.write("DELETE FROM walkme_heap_runs WHERE pipeline = ?", [pipeline])
    store.close()


def statuses(store: Ledger, pipeline: str, **bound: float) -> dict[str | None, str]:
    """Each shard's status as the report gets it (``latest``)."""
    return {r["shard"]: r["status"] for r in store.runs.latest(**bound) if r["pipeline"] == pipeline}


def test_the_default_bound_is_airflows_task_heartbeat_timeout() -> None:
    assert HEARTBEAT_TIMEOUT == 300.0  # [scheduler] task_instance_heartbeat_timeout in Airflow 3


def test_a_record_without_a_heartbeat_for_the_timeout_is_abandoned(clocked, pipeline: str) -> None:
    store, clock = clocked
    done = store.runs.start(pipeline, DAY, "run-0")
    store.runs.finish(done, "success", {"read": 1, "sent": 1}, None)
    failed = store.runs.start(pipeline, DAY, "run-1", "4/4")
    store.runs.finish(failed, "failed", {"read": 1}, None, "Heap did not answer")
    dead = store.runs.start(pipeline, DAY, "run-2", "1/4")  # its worker dies at once
    alive = store.runs.start(pipeline, DAY, "run-3", "2/4")
    clock.advance(250)
    store.runs.heartbeat(alive)
    clock.advance(150)  # dead: 400 s without a heartbeat; alive: 150 s
    expected = {None: "success", "4/4": "failed", "1/4": "abandoned", "2/4": "running"}
    assert statuses(store, pipeline) == expected  # what the report shows, before anything is written
    shown = {r["shard"]: r for r in store.runs.latest() if r["pipeline"] == pipeline}
    assert shown["1/4"]["message"] == "abandoned: no heartbeat for over 300 s (the try died)"
    assert {r["shard"]: r["status"] for r in run_records(store, pipeline)}["1/4"] == "running"
    assert store.runs.abandon_stale(HEARTBEAT_TIMEOUT) >= 1  # the ledger may hold other tests' too
    records = {r["shard"]: r for r in run_records(store, pipeline)}
    assert {shard: r["status"] for shard, r in records.items()} == expected
    assert (records["1/4"]["id"], records["1/4"]["message"]) == (
        dead,
        "abandoned: no heartbeat for over 300 s (the try died)",
    )
    store.runs.abandon_stale(HEARTBEAT_TIMEOUT)
    assert run_records(store, pipeline) == list(records.values())  # once is enough: nothing changes
    assert statuses(store, pipeline, heartbeat_timeout=100)["2/4"] == "abandoned"  # a shorter bound


def test_a_record_abandoned_too_soon_comes_back_with_its_next_heartbeat(clocked, pipeline: str) -> None:
    """A live run that could not beat for longer than the timeout (a batch retried for minutes)
    is not lost: its next heartbeat makes it ``running`` again, and its end is recorded as usual."""
    store, clock = clocked
    record = store.runs.start(pipeline, DAY, "run-1")
    clock.advance(HEARTBEAT_TIMEOUT + 1)
    assert store.runs.abandon_stale(HEARTBEAT_TIMEOUT) >= 1
    assert statuses(store, pipeline) == {None: "abandoned"}
    store.runs.heartbeat(record)
    ((status, message),) = [(r["status"], r["message"]) for r in run_records(store, pipeline)]
    assert (status, message) == ("running", None)
    store.runs.finish(record, "success", {"read": 3, "sent": 3}, None)
    assert statuses(store, pipeline) == {None: "success"}


def test_a_running_record_of_an_older_version_is_judged_by_its_start(clocked, pipeline: str) -> None:
    """Records written before heartbeats existed have none: their start is their last sign of life."""
    store, clock = clocked
    store.runs.start(pipeline, DAY, "create-the-tables")
    for shard, age in (("1/2", HEARTBEAT_TIMEOUT + 1), ("2/2", 10)):
        started = datetime.fromtimestamp(clock.time() - age, UTC).isoformat()
        store.database.write(
            "INSERT INTO walkme_heap_runs (pipeline, window_label, window_start, window_end, run_id, "
            "status, started_at, shard) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
            [pipeline, DAY.label, DAY.start.isoformat(), DAY.end.isoformat(), "old", started, shard],
        )
    assert statuses(store, pipeline) == {None: "running", "1/2": "abandoned", "2/2": "running"}
    assert store.runs.abandon_stale(HEARTBEAT_TIMEOUT) >= 1
    assert {r["shard"]: r["status"] for r in run_records(store, pipeline)} == {
        None: "running",
        "1/2": "abandoned",
        "2/2": "running",
    }
