"""Fault injection against the emulator. Every case ends with the same reconciliation: every valid
event received exactly once by key, every other row in the dead letters with its reason, and
read = sent + already sent + skipped + invalid + rejected. Runs with the ledger in SQLite and in
PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import (
    DAY,
    FAST_RETRIES,
    ROOT,
    SPEC,
    FakeClock,
    configure,
    expected_keys,
    received,
    run_records,
    stats,
    write_day,
)
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.sender import RetriesExhausted, RetryPolicy
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.replay import DeliveryError, ReplayOptions, replay
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.summary import ReplaySummary


def run(
    emulator: HeapEmulator,
    ledger: Ledger,
    path: Path,
    tmp_path: Path,
    pipeline: str,
    *,
    read_timeout: float = 5.0,
    **options: object,
) -> ReplaySummary:
    client = HeapClient(emulator.url, "app", connect_timeout=2, read_timeout=read_timeout)
    letters = DeadLetters(str(tmp_path / "dead"), pipeline, DAY.label)
    settings = {"max_events": 50, "retry": FAST_RETRIES, "max_invalid_ratio": 0.5, **options}
    try:
        return replay(
            pipeline,
            CsvSource(str(path), DAY, chunk_rows=100),
            SPEC,
            DAY,
            client,
            ReplayOptions(**settings),
            ledger=ledger,
            dead_letters=letters,
        )
    finally:
        client.close()


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
    assert run_records(ledger, pipeline) == [] and len(ledger.acks.acknowledged(pipeline, DAY.days())) == 0
    assert not (tmp_path / "dead").exists()
    samples = [r.message for r in caplog.records if "dry run sample payload" in r.message]
    assert len(samples) == 3 and all("user" not in s.split('"identity":')[1][:20] for s in samples)


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
    kind = "postgres" if ledger.database.placeholder == "%s" else "sqlite"
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
        summary = run(
            emulator,
            store,
            path,
            tmp_path,
            pipeline,
            app_limit=120,
            identity_limit=30,
            clock=clock.monotonic,
            sleep=clock.sleep,
        )
        elapsed = clock.monotonic() - started
        check(emulator, summary, tmp_path, pipeline, expected_keys(path))
        counts = stats(emulator)
        assert counts.get("throttled_429", 0) == 0 and summary.throttled == 0
        assert 60 <= elapsed < 75 and summary.waited_seconds >= 55
        assert max(counts["per_minute"]["app"].values()) <= 120


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
