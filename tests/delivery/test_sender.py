"""Sending a batch until Heap acknowledges it, with a fake clock and a fake Heap: retries with
backoff, Retry-After, the retry budget, bisection of refused events, configuration errors."""

from __future__ import annotations

import orjson
import pytest

from tests.helpers import FakeClock as Clock
from tests.helpers import identity_events as events
from walkme_heap.delivery.batching import Batcher
from walkme_heap.delivery.client import HeapRequestError
from walkme_heap.delivery.sender import HeapRefused, RetriesExhausted, RetryPolicy, Sender, Throttled


class FakeHeap:
    """Answers from a script of errors (None: a 200), then 200; records bodies; 400 for poisoned
    identities."""

    app_id = "app"

    def __init__(
        self, errors: list[HeapRequestError | None] | None = None, poison: set[str] | None = None
    ) -> None:
        self.errors = list(errors or [])
        self.poison = poison or set()
        self.bodies: list[list[dict]] = []

    def post(self, body: bytes) -> None:
        events = orjson.loads(body)["events"]
        self.bodies.append(events)
        if self.errors and (error := self.errors.pop(0)) is not None:
            raise error
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
            HeapRequestError(503, "slow down", retry_after=7),
            HeapRequestError(503, "x"),
            HeapRequestError(None, "reset"),
            HeapRequestError(500, "x"),
        ]
    )
    waits: list[float] = []
    retrying = Sender(
        heap,  # type: ignore[arg-type]
        RetryPolicy(base_seconds=1, max_backoff_seconds=60),
        on_wait=lambda: waits.append(clock()),  # progress and the run's heartbeat go on
        sleep=clock.sleep,
        clock=clock,
        rng=lambda: 1.0,
    )
    delivery = retrying.deliver(batch_of(events("a", 3)))
    assert clock.sleeps == [7, 2, 4, 8]  # Retry-After, then 1*2^(n-1) at full jitter's top
    assert (len(delivery.acknowledged), delivery.retries) == (1, 4)
    assert len(waits) == 4


def test_a_429_is_handed_back_not_slept_on() -> None:
    """The pacer re-paces a throttled batch (it may build another one from what fits)."""
    clock = Clock()
    heap = FakeHeap([HeapRequestError(429, "slow down", retry_after=7)])
    with pytest.raises(Throttled) as info:
        sender(heap, clock).deliver(batch_of(events("a", 3)))
    assert info.value.pause == 7 and clock.sleeps == [] and info.value.delivery.settled() == 0


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


class WallOfRefusals(FakeHeap):
    """A proxy's page, or an API change: every request is refused 400, naming no event."""

    def post(self, body: bytes) -> None:
        self.bodies.append(orjson.loads(body)["events"])
        raise HeapRequestError(400, "<html>Request blocked by policy</html>")


def test_a_refusal_of_every_event_stops_after_one_split_and_rejects_nothing() -> None:
    heap = WallOfRefusals()
    with pytest.raises(HeapRefused, match="each half of it again") as info:
        sender(heap, Clock()).deliver(batch_of([e for i in range(1000) for e in events(f"u{i}", 1)]))
    assert len(heap.bodies) == 3  # the batch and its two halves, not 2n-1 requests
    assert info.value.delivery.rejected == [] and info.value.delivery.acknowledged == []
    assert "Request blocked by policy" in str(info.value)


def test_an_event_heap_names_is_sent_alone_then_the_others_together() -> None:
    items = [e for i in range(1000) for e in events(f"u{i}", 1)]
    heap = FakeHeap(poison={"u3", "u700"})
    delivery = sender(heap, Clock()).deliver(batch_of(items))
    assert sorted(r.event["identity"] for r in delivery.rejected) == ["u3", "u700"]
    assert sum(len(b) for b in delivery.acknowledged) == 998
    assert len(heap.bodies) == 5  # batch, u3 alone, the rest, u700 alone, the rest


def test_isolation_finds_a_few_percent_of_bad_events_in_a_batch() -> None:
    """40 refused events in 1,000 (4%, within max_invalid_ratio): all isolated, the rest delivered
    (a fixed cap of 64 requests failed this batch on every try)."""
    items = [e for i in range(1000) for e in events(f"u{i}", 1)]
    heap = FakeHeap(poison={f"u{i}" for i in range(0, 1000, 25)})
    delivery = sender(heap, Clock()).deliver(batch_of(items))
    assert len(delivery.rejected) == 40 and sum(len(b) for b in delivery.acknowledged) == 960
    assert len(heap.bodies) == 1 + 2 * 40


def test_isolation_is_bounded_when_heap_refuses_event_after_event() -> None:
    """Every event refused, each named in turn (a change of Heap's API): isolation stops after room
    for a tenth of the batch (200 requests for 1,000), not 2,000; the rest stays unsent."""
    items = [e for i in range(1000) for e in events(f"u{i}", 1)]
    heap = FakeHeap(poison={f"u{i}" for i in range(1000)})
    with pytest.raises(HeapRefused, match=r"took 200 requests .* systematic refusal") as info:
        sender(heap, Clock()).deliver(batch_of(items))
    assert len(heap.bodies) == 201 and len(info.value.delivery.rejected) == 100
    assert info.value.delivery.acknowledged == []


def test_a_single_event_refused_without_being_named_is_not_rejected() -> None:
    """A one-event batch (a re-run's last new event) behind a WAF: not dead-lettered as refused by
    Heap; the run stops with the page, the event unsent."""
    heap = WallOfRefusals()
    with pytest.raises(HeapRefused, match="single event without naming it") as info:
        sender(heap, Clock()).deliver(batch_of(events("a", 1)))
    assert info.value.delivery.rejected == [] and len(heap.bodies) == 1


def test_one_retry_budget_for_a_batch_however_it_is_split() -> None:
    """Each part of a split used to start a fresh budget: a split batch could retry for ~n times it."""
    clock = Clock()
    down = HeapRequestError(503, "down")
    # refused whole (no event named): the first half waits 1+2+4+8 s, then is acknowledged
    errors = [HeapRequestError(400, "no event named"), down, down, down, down, None] + [down] * 100
    heap = FakeHeap(errors)
    with pytest.raises(RetriesExhausted):
        sender(heap, clock, base_seconds=1, max_backoff_seconds=10, max_seconds=30).deliver(
            batch_of([e for i in range(8) for e in events(f"u{i}", 1)])
        )
    assert clock.sleeps[:4] == [1, 2, 4, 8] and sum(clock.sleeps) <= 30  # not 15 + a fresh 30
