"""Exactly once at the edges of delivery, against the bundled emulator: nothing counts as sent that
Heap did not acknowledge (a redirect, another 2xx, a proxy's page), what no retry can fix fails the
task at once, a refusal of every event is not bisected into a day of requests, and Retry-After in
every form is honoured without hammering."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.helpers import DATA, DAY, FakeClock, configure, received, replay_csv, run_records, stats, write_day
from walkme_heap.delivery.sender import HeapRefused, RetryPolicy
from walkme_heap.emulator import HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.operators.replay import WalkMeToHeapOperator
from walkme_heap.replay import DeliveryError


def replay_day(emulator: HeapEmulator, ledger: Ledger, path: Path, tmp_path: Path, **options: object):
    return replay_csv(emulator, ledger, path, tmp_path, "edges", max_invalid_ratio=0.1, **options)


@pytest.fixture
def day(tmp_path: Path) -> Path:
    return write_day(tmp_path / "day.csv", 400)


@pytest.fixture
def sqlite_ledger(tmp_path: Path):
    store = Ledger.sqlite(str(tmp_path / "ledger.db"))
    yield store
    store.close()


def acknowledged(ledger: Ledger) -> int:
    return sum(n for _, _, _, n in ledger.acks.sent_per_day())


@pytest.mark.parametrize(
    "intercept",
    [
        {"status": 301, "headers": {"Location": "/_emulator/health"}},
        {"status": 308, "headers": {"Location": "/api/track"}},
        {"status": 202, "body": "{}", "content_type": "application/json"},
        {"status": 200, "body": "<html>Sign in to the guest network</html>"},
    ],
    ids=["301-to-a-page", "308", "202", "200-html"],
)
def test_what_only_looks_like_heaps_answer_records_nothing_and_fails_for_good(
    emulator: HeapEmulator, sqlite_ledger: Ledger, day: Path, tmp_path: Path, intercept: dict
) -> None:
    configure(emulator, intercept=intercept)
    with pytest.raises(DeliveryError) as info:
        replay_day(emulator, sqlite_ledger, day, tmp_path)
    assert not info.value.retryable and isinstance(info.value.__cause__, HeapRefused)
    assert info.value.summary.sent == 0 and info.value.summary.unsent == 400
    assert acknowledged(sqlite_ledger) == 0  # the next run sends every event
    assert run_records(sqlite_ledger, "edges")[0]["status"] == "failed"
    assert stats(emulator)["intercepted"] == 1  # failed at the first answer
    configure(emulator, intercept=None)
    again = replay_day(emulator, sqlite_ledger, day, tmp_path)
    assert (again.sent, again.already_sent) == (400, 0) and len(received(emulator)) == 400


def test_a_refusal_of_every_event_stops_at_once_and_keeps_the_events_unsent(
    emulator: HeapEmulator, sqlite_ledger: Ledger, day: Path, tmp_path: Path
) -> None:
    """A WAF page answering 400 to everything: 3 requests, not 2n-1 per batch for the whole day."""
    configure(emulator, intercept={"status": 400, "body": "<html>Request blocked (WAF rule 942100)</html>"})
    with pytest.raises(DeliveryError, match=r"each half of it again.*WAF rule 942100") as info:
        replay_day(emulator, sqlite_ledger, day, tmp_path)
    summary = info.value.summary
    assert not info.value.retryable
    assert stats(emulator)["requests"] == 3
    assert (summary.sent, summary.total_rejected, summary.unsent) == (0, 0, 400)
    assert not (tmp_path / "dead" / "edges" / f"{DAY.label}.jsonl").exists()  # nothing rejected


@pytest.mark.parametrize("form", ["seconds", "date", "date-0000", "date-nozone", "zero", "past"])
def test_retry_after_in_every_form_never_crashes_nor_hammers(
    emulator: HeapEmulator, sqlite_ledger: Ledger, day: Path, tmp_path: Path, form: str
) -> None:
    configure(emulator, throttle_burst=3, retry_after=True, retry_after_form=form)
    clock = FakeClock()
    retry = RetryPolicy(base_seconds=0.5, max_backoff_seconds=5, max_seconds=60)
    summary = replay_day(emulator, sqlite_ledger, day, tmp_path, retry=retry, clock=clock, sleep=clock.sleep)
    assert (summary.sent, summary.throttled) == (400, 3)
    sleeps = clock.sleeps  # the pacer's pauses after each 429 (nothing else waits here)
    assert len(sleeps) == 3
    if form in ("zero", "past"):  # no usable Retry-After: the jittered backoff, never below its base
        assert sleeps[0] == 0.5 and all(0.5 <= s <= 2.0 for s in sleeps)
    else:  # Retry-After of about a second (a date: whole seconds, rounded up)
        assert all(0.99 <= s <= 3.0 for s in sleeps)


def test_the_task_fails_without_retries_on_an_auth_or_wrong_url_answer(
    heap_connection: HeapEmulator,
) -> None:
    file = str(DATA / "e2e" / "walkme_webhooks_{date:%Y-%m-%d}.csv")
    mapping = {"event_name": {"event_type": "complete"}, "properties": {"exclude": ["oType"]}}
    task = WalkMeToHeapOperator(
        task_id="replay", pipeline="p", source={"path": file}, mapping=mapping, max_invalid_ratio=0.5
    )
    context = {
        "params": {},
        "data_interval_start": datetime(2024, 3, 10, tzinfo=UTC),
        "data_interval_end": datetime(2024, 3, 11, tzinfo=UTC),
        "run_id": "manual__test",
    }
    for status, hint in ((401, "proxy or firewall"), (403, "proxy or firewall"), (404, "no Heap API at")):
        configure(heap_connection, intercept={"status": status, "body": "<html>denied</html>"})
        with pytest.raises(AirflowFailException, match=f"pipeline 'p'.*HTTP {status}.*{hint}"):
            task.execute(context)  # type: ignore[arg-type]
    assert stats(heap_connection)["intercepted"] == 3 and received(heap_connection) == []
