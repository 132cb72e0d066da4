"""The outbox: a 429 while refused events are isolated ends with every event once; the dry run's
logged samples keep names, types and lengths, never identities or property values (a user variable
may hold an e-mail address)."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from tests.helpers import FakeClock, identity_events
from walkme_heap.delivery.budget import ReservedBudget
from walkme_heap.delivery.client import HeapRequestError
from walkme_heap.delivery.outbox import DryRunOutbox, Outbox
from walkme_heap.delivery.sender import RetryPolicy
from walkme_heap.ledger import Ledger
from walkme_heap.outcomes import Outcomes
from walkme_heap.summary import ReplaySummary


def test_dry_run_samples_mask_identities_and_property_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="walkme_heap.delivery.outbox")
    event = {
        "identity": "jane.doe@example.com",
        "event": "WalkMe Walk-thru Played",
        "timestamp": "2024-03-10T10:00:00.000+00:00",
        "properties": {"wm.userVars.email": "jane.doe@example.com", "wm.userVars.seats": 12},
        "idempotency_key": "wmh1-0123456789abcdef",
    }
    summary = ReplaySummary(pipeline="p", window={})
    outbox = DryRunOutbox(
        summary, samples=3, outcomes=Outcomes(summary, None), app_id="app", max_events=1000, max_bytes=10**6
    )
    outbox.put([event])
    outbox.finish()
    (line,) = [r.getMessage() for r in caplog.records if "sample payload" in r.getMessage()]
    assert "jane.doe" not in line and "example.com" not in line and "12" not in line.split("seats")[1][:12]
    assert '"wm.userVars.email":"<text, 20 chars>"' in line
    assert '"wm.userVars.seats":"<int>"' in line
    assert '"identity":"<20 chars>"' in line and "WalkMe Walk-thru Played" in line  # the mapping shows


class ScriptedHeap:
    """Answers from a script (None: 200), then 200; 400 naming the event for poisoned identities."""

    app_id = "app"

    def __init__(self, script: list[HeapRequestError | None], poison: set[str]) -> None:
        self.script, self.poison = script, poison
        self.accepted: list[str] = []
        self.requests: list[list[str]] = []  # the identities of each request

    def post(self, body: bytes) -> None:
        sent = orjson.loads(body)["events"]
        self.requests.append([e["identity"] for e in sent])
        if self.script and (answer := self.script.pop(0)) is not None:
            raise answer
        for i, event in enumerate(sent):
            if event["identity"] in self.poison:
                raise HeapRequestError(400, f"postBody.events[{i}] was rejected")
        self.accepted += [e["idempotency_key"] for e in sent]


def make_outbox(summary: ReplaySummary, heap: ScriptedHeap, **settings: object) -> Outbox:
    """An outbox over a scripted Heap: no limits, 10-event batches, nothing recorded, unless given."""
    defaults: dict[str, object] = {
        "budget": None,
        "identity_limit": None,
        "max_events": 10,
        "max_bytes": 1_000_000,
        "retry": RetryPolicy(),
        "pending_events": 1000,
        "outcomes": Outcomes(summary, None),
        "summary": summary,
        "record": lambda batch: None,
        "progress": lambda: None,
    }
    return Outbox(heap, **{**defaults, **settings})  # type: ignore[arg-type]


def test_a_429_in_the_middle_of_isolating_a_refused_event(tmp_path: Path) -> None:
    """Batch of 8 refused (u3 named) -> u3 alone, refused: rejected -> the other 7: 429 -> back to
    the pacer, which pauses, then sends them. Every event ends once: 7 sent, 1 rejected, and the
    budget holds only what Heap took."""
    clock = FakeClock()
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
    budget = ReservedBudget(ledger.budget, "app", "run", limit=100, in_flight=80.0, clock=clock)
    heap = ScriptedHeap([None, None, HeapRequestError(429, "slow down", retry_after=3.0)], {"u3"})
    summary = ReplaySummary(pipeline="p", window={})
    recorded: list[str] = []
    outbox = make_outbox(
        summary,
        heap,
        budget=budget,
        identity_limit=1000,
        max_events=8,
        record=lambda batch: recorded.extend(e["idempotency_key"] for e in batch.events),
        clock=clock,
        sleep=clock.sleep,
    )
    items = [e for i in range(8) for e in identity_events(f"u{i}", 1)]
    outbox.put(items)
    outbox.finish()
    assert (summary.sent, summary.total_rejected, summary.throttled, summary.unsent) == (7, 1, 1, 0)
    assert sorted(recorded) == sorted(heap.accepted) and len(recorded) == 7
    assert clock.sleeps == [3.0]  # Heap's Retry-After, then the batch again
    assert [len(r) for r in heap.requests] == [8, 1, 7, 7]  # u3 settled before the 429: not sent again
    held = ledger.database.fetch("SELECT sum(events) FROM walkme_heap_budget")[0][0]
    assert held == 7  # the throttled reservation went back; the one Heap took counts
    ledger.close()


def test_a_ledger_failure_after_heaps_answer_leaves_the_counts_reconciled() -> None:
    """The second batch's record fails: the error propagates as it is, the first batch counts as
    sent, and everything else (that batch included: not in the ledger) as unsent."""
    summary = ReplaySummary(pipeline="p", window={})
    recorded: list[int] = []

    def record(batch) -> None:
        if recorded:
            raise OSError("the ledger's disk is full")
        recorded.append(len(batch))

    outbox = make_outbox(summary, ScriptedHeap([], set()), record=record)
    outbox.put([e for i in range(35) for e in identity_events(f"u{i}", 1)])
    with pytest.raises(OSError, match="disk is full"):
        outbox.finish()
    assert (summary.sent, summary.unsent) == (10, 25)


class BrokenBudget:
    """A shared budget whose database is gone ("database is locked" after its timeout ...)."""

    def take(self, wanted: int, choose) -> tuple[int, float]:
        choose(wanted, {})  # the pacer has chosen its batch when the record fails
        raise OSError("database is locked")


def test_a_budget_that_fails_leaves_every_event_pending_and_counted() -> None:
    summary = ReplaySummary(pipeline="p", window={})
    outbox = make_outbox(summary, ScriptedHeap([], set()), budget=BrokenBudget())
    outbox.put([e for i in range(5) for e in identity_events(f"u{i}", 1)])
    with pytest.raises(OSError, match="database is locked"):
        outbox.finish()
    assert (outbox.pending, summary.sent, summary.unsent) == (5, 0, 5)
