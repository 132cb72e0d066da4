"""Sending a batch until Heap acknowledges it, with a fake clock and a fake Heap: retries with
backoff, Retry-After, the retry budget, bisection of refused events, configuration errors."""

from __future__ import annotations

import orjson
import pytest

from tests.helpers import FakeClock as Clock
from tests.helpers import identity_events as events
from walkme_heap.delivery.batching import Batcher
from walkme_heap.delivery.client import HeapRequestError
from walkme_heap.delivery.sender import HeapRefused, RetriesExhausted, RetryPolicy, Sender


class FakeHeap:
    """Answers from a script of errors, then 200; records bodies; 400 for poisoned identities."""

    app_id = "app"

    def __init__(self, errors: list[HeapRequestError] | None = None, poison: set[str] | None = None) -> None:
        self.errors = list(errors or [])
        self.poison = poison or set()
        self.bodies: list[list[dict]] = []

    def post(self, body: bytes) -> None:
        events = orjson.loads(body)["events"]
        self.bodies.append(events)
        if self.errors:
            raise self.errors.pop(0)
        for i, event in enumerate(events):
            if event["identity"] in self.poison:
                raise HeapRequestError(400, f"postBody.events[{i}] was rejected")


def batch_of(items: list[dict]):
    (batch,), _ = Batcher("app").pack(items)
    return batch


def sender(heap: FakeHeap, clock: Clock, **policy: float) -> Sender:
    return Sender(heap, RetryPolicy(**policy), sleep=clock.sleep, clock=clock, rng=lambda: 1.0)  # type: ignore[arg-type]


def test_retry_after_is_honoured_and_backoff_grows() -> None:
    clock = Clock()
    heap = FakeHeap(
        [
            HeapRequestError(429, "slow down", retry_after=7),
            HeapRequestError(503, "x"),
            HeapRequestError(None, "reset"),
            HeapRequestError(500, "x"),
        ]
    )
    delivery = sender(heap, clock, base_seconds=1, max_backoff_seconds=60).deliver(batch_of(events("a", 3)))
    assert clock.sleeps == [7, 2, 4, 8]  # Retry-After, then 1*2^(n-1) at full jitter's top
    assert (len(delivery.acknowledged), delivery.retries, delivery.throttled) == (1, 4, 1)


def test_retries_stop_at_the_time_budget() -> None:
    clock = Clock()
    heap = FakeHeap([HeapRequestError(503, "down")] * 100)
    with pytest.raises(RetriesExhausted, match="not acknowledged after"):
        sender(heap, clock, base_seconds=1, max_backoff_seconds=10, max_seconds=60).deliver(
            batch_of(events("a", 2))
        )
    assert sum(clock.sleeps) <= 60


def test_bisection_isolates_exactly_the_refused_events() -> None:
    clock = Clock()
    items = [e for i in range(16) for e in events(f"u{i}", 1)]
    heap = FakeHeap(poison={"u3", "u12"})
    delivery = sender(heap, clock).deliver(batch_of(items))
    assert sorted(r.event["identity"] for r in delivery.rejected) == ["u12", "u3"]
    assert all("was rejected" in r.message for r in delivery.rejected)
    acknowledged = [e["identity"] for b in delivery.acknowledged for e in b.events]
    assert sorted(acknowledged) == sorted(f"u{i}" for i in range(16) if i not in (3, 12))
    assert len(heap.bodies) <= 1 + 2 * 2 * 4  # at most two paths of depth log2(16)


def test_configuration_errors_are_not_retried() -> None:
    heap = FakeHeap([HeapRequestError(401, "unauthorized")])
    with pytest.raises(HeapRefused, match="401"):
        sender(heap, Clock()).deliver(batch_of(events("a", 1)))
    assert len(heap.bodies) == 1
