"""Fault injection against the emulator. Every case ends with the same reconciliation: every valid
event received exactly once by key, every other row in the dead letters with its reason, and
read = sent + already sent + skipped + invalid + rejected. Runs with the ledger in SQLite and in
PostgreSQL."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, received
from tests.warehouse import PG_DSN, postgres_connection
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.sender import RetryPolicy
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.mapping.columns import bind_columns
from walkme_heap.mapping.mapper import Mapper
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec
from walkme_heap.replay import DeliveryError, ReplayOptions, replay
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.summary import ReplaySummary
from walkme_heap.window import Window

DAY = Window(datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC))
SPEC = MappingSpec(event_name=EventNameSpec(event_type="complete"))
HEADER = ["wm.euId", "created_at", "type", "oType", "oId", "sId", "ctx.title"]
FAST_RETRIES = RetryPolicy(base_seconds=0.02, max_backoff_seconds=0.2, max_seconds=20)


def write_day(
    path: Path, count: int, *, first: int = 0, invalid: int = 6, start_ms: int = DAY.start_ms
) -> Path:
    """``count`` valid rows over 40 identities (one heavy), plus ``invalid`` bad rows."""
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(HEADER)
        for n in range(first, first + count):
            identity = "heavy-user" if n % 4 == 0 else f"user-{n % 39:02d}"
            when = start_ms + n * 97_000 % 86_400_000
            writer.writerow([identity, when, "play", "wt", str(1000 + n % 7), f"s-{n}", f"Page {n} ü"])
        for n in range(invalid if new else 0):
            writer.writerow(["null" if n % 2 else "", start_ms + n, "play", "wt", "1", "s", "t"])
    return path


def expected_keys(path: Path, window: Window = DAY) -> set[str]:
    source = CsvSource(str(path), window)
    mapper = Mapper(SPEC, bind_columns(SPEC, source.headers(str(path)), "x"))
    return {
        e["idempotency_key"]
        for c in source.chunks(str(path))
        for e in mapper.map_chunk(c.frame, window.start_ms, window.end_ms).events
    }


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        store = Ledger.sqlite(str(tmp_path / "ledger.db"))
    else:
        import psycopg

        postgres_connection().close()  # skips (or fails under CI=true) without a server
        store = Ledger(lambda: psycopg.connect(PG_DSN), "%s")
    yield store
    store.close()


@pytest.fixture
def pipeline() -> str:
    return f"faults_{uuid.uuid4().hex[:10]}"  # isolates tests sharing the PostgreSQL ledger


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


def configure(emulator: HeapEmulator, **changes: object) -> None:
    response = requests.post(f"{emulator.url}/_emulator/config", json=changes, timeout=5)
    assert response.status_code == 200, response.text


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
    assert requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()["duplicate_events"] == 0
    runs = ledger.runs(pipeline)
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
    stats = requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()
    assert stats["dropped"] + stats["dropped_after_accept"] > 0 and summary.retries > 0


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
    assert not (tmp_path / "dead" / pipeline / f"{DAY.label}.jsonl").exists()  # kept only on success
    assert ledger.runs(pipeline)[0]["status"] == "failed"
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
    assert requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()["duplicate_events"] == 0


def test_dry_run_makes_no_call_and_writes_nothing(emulator, ledger, day, tmp_path, pipeline, caplog) -> None:
    caplog.set_level("INFO")
    summary = run(emulator, ledger, day, tmp_path, pipeline, dry_run=True)
    assert summary.sent == 400 and summary.dry_run
    assert requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json().get("requests", 0) == 0
    assert ledger.runs(pipeline) == [] and len(ledger.acknowledged(pipeline, DAY.days())) == 0
    assert not (tmp_path / "dead").exists()
    samples = [r.message for r in caplog.records if "dry run sample payload" in r.message]
    assert len(samples) == 3 and all("user" not in s.split('"identity":')[1][:20] for s in samples)


def test_force_sends_everything_again(emulator, ledger, day, tmp_path, pipeline) -> None:
    run(emulator, ledger, day, tmp_path, pipeline)
    forced = run(emulator, ledger, day, tmp_path, pipeline, force=True)
    assert (forced.sent, forced.already_sent) == (400, 0)
    check(emulator, forced, tmp_path, pipeline, expected_keys(day))
    assert requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()["duplicate_events"] == 400


def test_sigkill_mid_run_then_rerun(emulator, ledger, tmp_path, pipeline, request) -> None:
    path = write_day(tmp_path / "day.csv", 600)
    configure(emulator, latency_ms=60)
    kind = "postgres" if isinstance(ledger._placeholder, str) and ledger._placeholder == "%s" else "sqlite"
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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(received(emulator)) < 200:
        assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    killed_at = len(received(emulator))
    assert 200 <= killed_at < 600
    configure(emulator, latency_ms=0)
    summary = run(emulator, ledger, path, tmp_path, pipeline)
    check(emulator, summary, tmp_path, pipeline, expected_keys(path))
    stats = requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()
    assert stats["duplicate_events"] <= 50  # at most the batch in flight was sent twice
    assert summary.already_sent >= killed_at - 50 and summary.sent + summary.already_sent == 600


@pytest.mark.e2e
def test_pacing_keeps_within_heaps_limits_in_real_time(tmp_path: Path, pipeline: str) -> None:
    """One minute of real time: 160 events, an app limit of 120 and an identity limit of 30 a minute."""
    settings = EmulatorSettings(app_limit=120, identity_limit=30)
    with HeapEmulator(settings=settings) as emulator:
        path = write_day(tmp_path / "day.csv", 160, invalid=0)
        store = Ledger.sqlite(str(tmp_path / "ledger.db"))
        started = time.monotonic()
        summary = run(emulator, store, path, tmp_path, pipeline, app_limit=120, identity_limit=30)
        elapsed = time.monotonic() - started
        check(emulator, summary, tmp_path, pipeline, expected_keys(path))
        stats = requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()
        assert stats.get("throttled_429", 0) == 0 and summary.throttled == 0
        assert 60 <= elapsed < 75 and summary.waited_seconds >= 55


def test_progress_lines_give_sent_total_rate_and_eta(
    emulator, day, tmp_path, pipeline, caplog, monkeypatch
) -> None:
    import walkme_heap.replay as replay_module

    monkeypatch.setattr(replay_module, "PROGRESS_SECONDS", 0.0)
    caplog.set_level("INFO", logger="walkme_heap.replay")
    store = Ledger.sqlite(str(tmp_path / "ledger.db"))
    run(emulator, store, day, tmp_path, pipeline, row_limit=None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert len(lines) >= 8  # one per acknowledged batch here, plus the final one
    assert re.match(r"progress: 400 events sent of about 400 \(100%\), \d+ events/s, ETA 0 s", lines[-1])
    assert all("user-" not in line and "heavy-user" not in line for line in lines)


def test_row_limit_reads_only_that_many_rows(emulator, day, tmp_path, pipeline) -> None:
    store = Ledger.sqlite(str(tmp_path / "ledger.db"))
    summary = run(emulator, store, day, tmp_path, pipeline, row_limit=150)
    assert summary.read == 150 and summary.sent + summary.total_invalid + summary.total_skipped == 150
