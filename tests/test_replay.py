"""Fault injection against the emulator. Every case ends with the same reconciliation: every valid
event received exactly once by key, every other row in the dead letters with its reason, and
read = sent + already sent + skipped + invalid + rejected. Runs with the ledger in SQLite, in
PostgreSQL and in MariaDB."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    DAY,
    ROOT,
    SPEC,
    FakeClock,
    configure,
    expected_keys,
    postgres_connection,
    postgres_ledger,
    received,
    replay_csv,
    run_records,
    stats,
    write_day,
)
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.sender import RetriesExhausted, RetryPolicy
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.replay import DeliveryError, ReplayOptions, replay
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.summary import ReplaySummary

run = replay_csv  # every test here replays the test day's CSV


def check(
    emulator: HeapEmulator,
    summary: ReplaySummary,
    tmp_path: Path,
    pipeline: str,
    keys: set[str],
    rejected: set[str] = frozenset(),
) -> list[dict]:
    """The reconciliation every case ends with."""
    assert {e["idempotency_key"] for e in received(emulator)} == keys - rejected
    assert summary.unaccounted == 0
    assert summary.read == (
        summary.sent
        + summary.already_sent
        + summary.total_skipped
        + summary.total_invalid
        + summary.total_rejected
    )
    letters = [
        json.loads(line)
        for line in (tmp_path / "dead" / pipeline / f"{DAY.label}.jsonl").read_text().splitlines()
    ]
    assert Counter(d["reason"] for d in letters if d["outcome"] == "invalid") == summary.invalid
    assert Counter(d["reason"] for d in letters if d["outcome"] == "rejected") == summary.rejected
    assert {d["payload"]["idempotency_key"] for d in letters if d["outcome"] == "rejected"} == set(rejected)
    return letters


@pytest.fixture
def day(tmp_path: Path) -> Path:
    return write_day(tmp_path / "day.csv", 400)


def test_clean_run_then_rerun_sends_nothing(emulator, ledger, day, tmp_path, pipeline) -> None:
    keys = expected_keys(day)
    first = run(emulator, ledger, day, tmp_path, pipeline)
    check(emulator, first, tmp_path, pipeline, keys)
    assert (first.sent, first.total_invalid, first.throttled) == (400, 6, 0)
    letters = check(emulator, first, tmp_path, pipeline, keys)
    assert all(d["source"]["wm.euId"] in (None, "null") for d in letters)  # the source row is kept
    second = run(emulator, ledger, day, tmp_path, pipeline)
    assert (second.sent, second.already_sent) == (0, 400)
    check(emulator, second, tmp_path, pipeline, keys)
    assert stats(emulator)["duplicate_events"] == 0
    runs = run_records(ledger, pipeline)
    assert [r["status"] for r in runs] == ["success", "success"]
    assert (runs[0]["sent"], runs[0]["already_sent"], runs[1]["sent"]) == (0, 400, 400)


@pytest.mark.parametrize("retry_after", [True, False])
def test_429_storm(emulator, ledger, day, tmp_path, pipeline, retry_after: bool) -> None:
    configure(emulator, throttle_burst=3, retry_after=retry_after)
    started = time.monotonic()
    summary = run(emulator, ledger, day, tmp_path, pipeline)
    check(emulator, summary, tmp_path, pipeline, expected_keys(day))
    assert summary.throttled == 3
    if retry_after:
        assert time.monotonic() - started >= 3.0  # Retry-After: 1, three times


def test_5xx_bursts(emulator, ledger, day, tmp_path, pipeline) -> None:
    configure(emulator, burst_5xx=4, error_rate=0.2, seed=3)
    summary = run(emulator, ledger, day, tmp_path, pipeline)
    check(emulator, summary, tmp_path, pipeline, expected_keys(day))
    assert summary.retries >= 4


def test_dropped_connections_before_and_after_acceptance(emulator, ledger, day, tmp_path, pipeline) -> None:
    configure(emulator, drop_rate=0.2, drop_after_accept_rate=0.2, seed=5)
    summary = run(emulator, ledger, day, tmp_path, pipeline)
    check(emulator, summary, tmp_path, pipeline, expected_keys(day))
    counts = stats(emulator)
    assert counts["dropped"] + counts["dropped_after_accept"] > 0 and summary.retries > 0


def test_responses_slower_than_the_timeout(emulator, ledger, day, tmp_path, pipeline) -> None:
    configure(emulator, slow_burst=2, slow_burst_ms=1500)
    summary = run(emulator, ledger, day, tmp_path, pipeline, read_timeout=0.5)
    check(emulator, summary, tmp_path, pipeline, expected_keys(day))
    assert summary.retries >= 2


def test_poisoned_events_are_isolated(emulator, ledger, day, tmp_path, pipeline) -> None:
    configure(emulator, poison="Page 17 ")
    keys = expected_keys(day)
    summary = run(emulator, ledger, day, tmp_path, pipeline)
    poisoned = {k for k in keys if k not in {e["idempotency_key"] for e in received(emulator)}}
    assert len(poisoned) == 1 and summary.total_rejected == 1
    letters = check(emulator, summary, tmp_path, pipeline, keys, poisoned)
    assert any("poisoned event" in d["message"] and d["attempts"] == 1 for d in letters)
    # a re-run tries the refused event again (it is not in the ledger), and nothing else
    configure(emulator, poison=None)
    again = run(emulator, ledger, day, tmp_path, pipeline)
    assert (again.sent, again.already_sent) == (1, 399)


def test_exhausted_retries_fail_and_the_next_run_sends_only_the_rest(
    emulator, ledger, day, tmp_path, pipeline
) -> None:
    configure(emulator, error_rate=0.0)
    summary_ok = None
    configure(emulator, burst_5xx=10_000)
    with pytest.raises(DeliveryError, match="not acknowledged") as info:
        run(emulator, ledger, day, tmp_path, pipeline, retry=RetryPolicy(base_seconds=0.01, max_seconds=0.3))
    assert info.value.summary.sent == 0 and info.value.summary.unsent > 0
    assert isinstance(info.value.__cause__, RetriesExhausted)  # what Heap did, for a caller to tell
    assert not (tmp_path / "dead" / pipeline / f"{DAY.label}.jsonl").exists()  # kept only on success
    assert run_records(ledger, pipeline)[0]["status"] == "failed"
    configure(emulator, burst_5xx=0)
    summary_ok = run(emulator, ledger, day, tmp_path, pipeline)
    check(emulator, summary_ok, tmp_path, pipeline, expected_keys(day))
    assert summary_ok.sent == 400


def test_late_rows_are_sent_on_the_next_run_and_only_they(emulator, ledger, tmp_path, pipeline) -> None:
    path = write_day(tmp_path / "day.csv", 300)
    first = run(emulator, ledger, path, tmp_path, pipeline)
    assert first.sent == 300
    write_day(path, 25, first=10_000)  # late arrivals for the same day
    second = run(emulator, ledger, path, tmp_path, pipeline)
    assert (second.sent, second.already_sent) == (25, 300)
    check(emulator, second, tmp_path, pipeline, expected_keys(path))
    assert stats(emulator)["duplicate_events"] == 0


def test_dry_run_makes_no_call_and_writes_nothing(emulator, ledger, day, tmp_path, pipeline, caplog) -> None:
    caplog.set_level("INFO")
    summary = run(emulator, ledger, day, tmp_path, pipeline, dry_run=True)
    assert summary.sent == 400 and summary.dry_run
    assert stats(emulator).get("requests", 0) == 0
    assert run_records(ledger, pipeline) == []
    assert len(ledger.acks.acknowledged(pipeline, DAY.days(), app_id=None)) == 0
    assert not (tmp_path / "dead").exists()
    samples = [r.message for r in caplog.records if "dry run sample payload" in r.message]
    assert len(samples) == 3 and all("user" not in s.split('"identity":')[1][:20] for s in samples)


def test_a_dry_run_counts_an_event_too_large_for_any_request_as_the_real_run_does(
    emulator, ledger, day, tmp_path, pipeline
) -> None:
    """A dry run packs its events as a real run would: an event over the byte cap on its own is
    counted invalid (``event_too_large``), not sent, so the check before a backfill tells the truth."""
    import csv

    with day.open("a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow(["big-user", DAY.start_ms + 5, "play", "wt", "1", "s-big", "x" * 1000])
    dry = run(emulator, ledger, day, tmp_path, pipeline, dry_run=True, max_bytes=1024)
    real = run(emulator, ledger, day, tmp_path, pipeline, max_bytes=1024)
    assert real.invalid["event_too_large"] == 1 and real.sent == 400
    assert (dry.sent, dict(dry.invalid), dry.unaccounted) == (real.sent, dict(real.invalid), 0)
    assert stats(emulator)["accepted_events"] == 400


def test_a_run_into_another_heap_app_sends_again(emulator, ledger, day, tmp_path, pipeline) -> None:
    """Heap accepts any app id silently: a day replayed into one app, then into another (the
    connection pointed elsewhere, or a wrong id corrected), is sent to the second app in full, and
    the summary names the app its "already sent" refers to."""
    keys = expected_keys(day)
    first = run(emulator, ledger, day, tmp_path, pipeline, app="wrong-app")
    second = run(emulator, ledger, day, tmp_path, pipeline, app="right-app")
    assert (first.sent, second.sent, second.already_sent) == (400, 400, 0)
    check(emulator, second, tmp_path, pipeline, keys)
    assert Counter(e["app_id"] for e in received(emulator)) == {"wrong-app": 400, "right-app": 400}
    assert (first.app_id, second.app_id) == ("wrong-app", "right-app")
    assert "Heap app" in second.table() and "right-app" in second.table()
    again = run(emulator, ledger, day, tmp_path, pipeline, app="right-app")
    assert (again.sent, again.already_sent) == (0, 400)
    assert stats(emulator)["duplicate_events"] == 0


def test_a_dry_run_counts_already_sent_for_the_app_it_is_given(
    emulator, ledger, day, tmp_path, pipeline, caplog
) -> None:
    """A dry run has no client: its "already sent" is for the app the options name, or, with none,
    for every app (and the log says which)."""
    run(emulator, ledger, day, tmp_path, pipeline, app="app-a")
    source = CsvSource(str(day), DAY, chunk_rows=100)
    caplog.set_level("INFO", logger="walkme_heap.replay")

    def dry(app_id: str | None) -> ReplaySummary:
        options = ReplayOptions(dry_run=True, app_id=app_id, max_invalid_ratio=0.5)
        return replay(pipeline, source, SPEC, DAY, None, options, ledger=ledger)

    assert (dry("app-a").already_sent, dry("app-b").already_sent) == (400, 0)
    assert "already sent: what the ledger holds for Heap app app-b" in caplog.text
    anywhere = dry(None)
    assert (anywhere.already_sent, anywhere.app_id) == (400, None)
    assert "already sent: what the ledger holds for any Heap app (no app id given)" in caplog.text
    assert "any (no app id given)" in anywhere.table()


def test_force_sends_everything_again(emulator, ledger, day, tmp_path, pipeline) -> None:
    run(emulator, ledger, day, tmp_path, pipeline)
    forced = run(emulator, ledger, day, tmp_path, pipeline, force=True)
    assert (forced.sent, forced.already_sent) == (400, 0)
    check(emulator, forced, tmp_path, pipeline, expected_keys(day))
    assert stats(emulator)["duplicate_events"] == 400


def test_sigkill_mid_run_then_rerun(emulator, ledger, tmp_path, pipeline) -> None:
    """The replay is killed while Heap holds its fifth batch (accepted, not yet answered): the
    ledger has four, the re-run sends the rest, and Heap sees only that one batch twice."""
    path = write_day(tmp_path / "day.csv", 600)
    configure(emulator, hold_after=200)  # batches of 50: the fifth is accepted, its answer held
    kind = ledger.database.dialect.name  # the child opens the same ledger
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("replay_child.py")),
            str(path),
            emulator.url,
            kind,
            str(tmp_path / "ledger.db"),
            pipeline,
            str(tmp_path / "dead"),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while stats(emulator).get("held_answers", 0) == 0:
        assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
        assert time.monotonic() < deadline, "the replay never reached its fifth batch"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    killed_at = len(received(emulator))
    assert killed_at == 250
    assert 200 <= killed_at < 600
    configure(emulator, hold_after=None)  # the held answer goes nowhere: its client is dead
    summary = run(emulator, ledger, path, tmp_path, pipeline)
    check(emulator, summary, tmp_path, pipeline, expected_keys(path))
    counts = stats(emulator)
    assert counts["duplicate_events"] <= 50  # at most the batch in flight was sent twice
    assert counts["duplicate_events"] == 50 and summary.already_sent == 200
    assert summary.already_sent >= killed_at - 50 and summary.sent + summary.already_sent == 600


BROKEN = "disk I/O error (test: the connection broke while recording acknowledged batch 3)"


class _BreakingCursor:
    def __init__(self, connection: BreakingConnection) -> None:
        self.connection, self.cursor = connection, connection.db.cursor()

    def execute(self, text: str, params: Any = ()) -> _BreakingCursor:
        connection = self.connection
        connection.check()
        if text.startswith("INSERT INTO walkme_heap_acks"):
            connection.acks += 1
            if connection.acks == connection.break_at:
                connection.broken = True
                raise sqlite3.OperationalError(BROKEN)
        self.cursor.execute(text, params)
        return self

    def __getattr__(self, name: str) -> Any:  # fetchone, fetchall, lastrowid, description
        return getattr(self.cursor, name)


class BreakingConnection:
    """A SQLite connection that breaks like a killed database session when it writes the
    ``break_at``-th acknowledgement, after Heap answered that batch: that statement fails with
    ``BROKEN``, and every statement and commit after it fails too; so does a rollback, unless
    ``quiet_rollback`` (a driver that does not tell, so the connection looks usable)."""

    def __init__(self, path: Path, break_at: int, quiet_rollback: bool = False) -> None:
        self.db, self.break_at, self.acks, self.broken = sqlite3.connect(path), break_at, 0, False
        self.quiet_rollback = quiet_rollback

    def check(self) -> None:
        if self.broken:
            raise sqlite3.OperationalError("disk I/O error (test: the connection is broken)")

    def cursor(self) -> _BreakingCursor:
        return _BreakingCursor(self)

    def commit(self) -> None:
        self.check()
        self.db.commit()

    def rollback(self) -> None:
        if not (self.broken and self.quiet_rollback):
            self.check()
            self.db.rollback()

    def close(self) -> None:
        self.db.close()

    def __getattr__(self, name: str) -> Any:  # in_transaction, execute, create_function (SQLAlchemy)
        self.check()
        return getattr(self.db, name)


@pytest.mark.parametrize(
    ("quiet_rollback", "reconnects"),
    [(False, True), (True, True), (False, False)],
    ids=["reconnects", "rollback-does-not-tell", "database-gone"],
)
def test_a_ledger_that_breaks_after_heap_answered_raises_its_own_error(
    emulator, day, tmp_path, pipeline, caplog, quiet_rollback: bool, reconnects: bool
) -> None:
    """The ledger's connection breaks while recording the third batch Heap acknowledged: the run
    raises that error (not a later one from the broken connection), its record is marked failed on a
    fresh connection (or, when none can be had, a warning says so and the error is still the
    original), and the next run sends only what the ledger does not hold."""
    path = tmp_path / "ledger.db"
    opened: list[Any] = []

    def connect() -> Any:
        if opened and not reconnects:
            raise sqlite3.OperationalError("unable to open database file (test: the database is gone)")
        opened.append(sqlite3.connect(path) if opened else BreakingConnection(path, 3, quiet_rollback))
        return opened[-1]

    store = Ledger(connect, "?", dialect="sqlite")  # a wrapper: its class does not tell the database
    with pytest.raises(sqlite3.OperationalError) as info:
        run(emulator, store, day, tmp_path, pipeline)
    assert str(info.value) == BROKEN
    after = Ledger.sqlite(str(path))
    (record,) = run_records(after, pipeline)
    if reconnects:
        assert (record["status"], record["message"], record["sent"]) == ("failed", BROKEN, 100)
    else:
        assert record["status"] == "running"  # until a later run finds it abandoned
        assert "could not be marked failed" in caplog.text and "the database is gone" in caplog.text
    assert len(after.acks.acknowledged(pipeline, DAY.days(), app_id="app")) == 100  # two batches of 50
    summary = run(emulator, after, day, tmp_path, pipeline)
    assert (summary.sent, summary.already_sent) == (300, 100)
    check(emulator, summary, tmp_path, pipeline, expected_keys(day))
    assert stats(emulator)["duplicate_events"] == 50  # the batch whose record failed, sent again


class TerminatesLedgerSession(HeapClient):
    """A client that, once Heap has answered its ``after``-th request, has PostgreSQL terminate the
    ledger's session (``pg_terminate_backend``, as an administrator or a failover would)."""

    def __init__(self, url: str, backend_pid: int, after: int) -> None:
        super().__init__(url, "app", connect_timeout=2, read_timeout=5)
        self.backend_pid, self.after, self.posts = backend_pid, after, 0

    def post(self, body: bytes) -> Any:
        answer = super().post(body)
        self.posts += 1
        if self.posts == self.after:
            with postgres_connection() as admin:
                admin.autocommit = True
                admin.execute("SELECT pg_terminate_backend(%s)", [self.backend_pid])
                deadline = time.monotonic() + 10
                while admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [self.backend_pid]
                ).fetchone():
                    assert time.monotonic() < deadline, "the ledger's session was not terminated"
                    time.sleep(0.02)
        return answer


def test_a_postgres_ledger_session_terminated_after_heap_answered(emulator, day, tmp_path, pipeline) -> None:
    """The ledger's PostgreSQL session is killed between Heap's answer to the third batch and its
    record: the run raises PostgreSQL's error, not one from the dead connection, and its record is
    marked failed on a new session."""
    import psycopg

    store = postgres_ledger()
    pid = store.database.connection.info.backend_pid
    client = TerminatesLedgerSession(emulator.url, pid, after=3)
    try:
        with pytest.raises(psycopg.OperationalError, match="terminating connection due to administrator"):
            run(emulator, store, day, tmp_path, pipeline, client=client)
    finally:
        client.close()
    (record,) = run_records(store, pipeline)  # read on a new session
    assert record["status"] == "failed" and "terminating connection" in record["message"]
    assert len(store.acks.acknowledged(pipeline, DAY.days(), app_id="app")) == 100
    summary = run(emulator, store, day, tmp_path, pipeline)
    assert (summary.sent, summary.already_sent) == (300, 100)
    check(emulator, summary, tmp_path, pipeline, expected_keys(day))
    store.close()


def run_paced(
    emulator: HeapEmulator,
    store: Ledger,
    path: Path,
    tmp_path: Path,
    pipeline: str,
    clock: FakeClock,
    **options,
) -> ReplaySummary:
    """A run at 120 events a minute for the app and 30 for an identity, on ``clock``."""
    paced = {"app_limit": 120, "identity_limit": 30, "clock": clock.monotonic, "sleep": clock.sleep}
    return run(emulator, store, path, tmp_path, pipeline, **paced, **options)


def test_pacing_keeps_within_heaps_limits(tmp_path: Path, pipeline: str) -> None:
    """One minute of (made-up) time: 160 events, an app limit of 120 and an identity limit of 30 a
    minute. The replay, its ledger's budget and the emulator share one clock that only waiting
    advances, so the run's length is exact and a loaded machine cannot make it differ."""
    clock = FakeClock()
    settings = EmulatorSettings(app_limit=120, identity_limit=30)
    with HeapEmulator(settings=settings, clock=clock.time) as emulator:
        path = write_day(tmp_path / "day.csv", 160, invalid=0)
        store = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
        started = clock.monotonic()
        summary = run_paced(emulator, store, path, tmp_path, pipeline, clock)
        elapsed = clock.monotonic() - started
        check(emulator, summary, tmp_path, pipeline, expected_keys(path))
        counts = stats(emulator)
        assert counts.get("throttled_429", 0) == 0 and summary.throttled == 0
        assert 60 <= elapsed < 75 and summary.waited_seconds >= 55
        assert max(counts["per_minute"]["app"].values()) <= 120


def test_a_replay_heartbeats_and_abandons_the_records_of_dead_tries(
    tmp_path: Path, pipeline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A try that died left its record ``running``: the next run marks it ``abandoned`` when it
    starts (its heartbeat is older than the timeout), and keeps its own record's heartbeat fresh
    while it runs: about a minute of (made-up) pacing, a heartbeat timeout of 30 s, so a heartbeat
    at most every 6 s and never a gap near the timeout."""
    clock = FakeClock()
    settings = EmulatorSettings(app_limit=120, identity_limit=30)
    with HeapEmulator(settings=settings, clock=clock.time) as emulator:
        path = write_day(tmp_path / "day.csv", 160, invalid=0)
        store = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
        dead = store.runs.start(pipeline, DAY, "scheduled__2024-03-11")
        clock.advance(31)
        started = clock.time()
        beats: list[float] = []
        heartbeat = store.runs.heartbeat
        monkeypatch.setattr(
            store.runs, "heartbeat", lambda record: (beats.append(clock.time()), heartbeat(record))
        )
        run_paced(emulator, store, path, tmp_path, pipeline, clock, heartbeat_timeout=30.0)
        ended = clock.time()
    mine, theirs = run_records(store, pipeline)
    assert (theirs["id"], theirs["status"], mine["status"]) == (dead, "abandoned", "success")
    gaps = [later - earlier for earlier, later in zip([started, *beats], [*beats, ended], strict=True)]
    assert len(beats) >= 5 and min(gaps[:-1]) >= 6 and max(gaps) < 15  # ticks come every 5 s or sooner
    assert mine["heartbeat_epoch"] == beats[-1]


def test_progress_lines_give_sent_total_rate_and_eta(emulator, day, tmp_path, pipeline, caplog) -> None:
    caplog.set_level("INFO", logger="walkme_heap.progress")
    store = Ledger.sqlite(str(tmp_path / "ledger.db"))
    run(emulator, store, day, tmp_path, pipeline, progress_seconds=0.0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert len(lines) >= 8  # one per acknowledged batch here, plus the final one
    assert re.match(r"progress: 400 events sent of about 400 \(100%\), \d+ events/s, ETA 0 s", lines[-1])
    assert all("user-" not in line and "heavy-user" not in line for line in lines)


def test_row_limit_reads_only_that_many_rows(emulator, day, tmp_path, pipeline) -> None:
    store = Ledger.sqlite(str(tmp_path / "ledger.db"))
    summary = run(emulator, store, day, tmp_path, pipeline, row_limit=150)
    assert summary.read == 150 and summary.sent + summary.total_invalid + summary.total_skipped == 150


def test_a_rerun_that_only_reads_still_heartbeats(
    emulator, day, tmp_path: Path, pipeline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run of a day already sent sends nothing, so no batch ticks the progress: reading each
    chunk does, so a long read of what needs no sending is not taken for a dead try."""
    store = Ledger.sqlite(str(tmp_path / "ledger.db"))
    run(emulator, store, day, tmp_path, pipeline)
    ticking = FakeClock()

    def clock() -> float:  # ten seconds pass between any two looks at the clock
        ticking.advance(10.0)
        return ticking.monotonic()

    beats: list[int] = []
    heartbeat = store.runs.heartbeat
    monkeypatch.setattr(store.runs, "heartbeat", lambda record: (beats.append(record), heartbeat(record)))
    again = run(emulator, store, day, tmp_path, pipeline, clock=clock, heartbeat_timeout=30.0)
    assert (again.sent, again.already_sent) == (0, 400)
    assert len(beats) >= 4  # 406 rows in chunks of 100: a beat per chunk at this pace
    store.close()
