"""Pacing and sending, with a fake clock and a fake Heap: limits, fairness, retries, bisection."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from walkme_heap.delivery.batching import Batcher
from walkme_heap.delivery.client import HeapRequestError
from walkme_heap.delivery.pacing import MARGIN_SECONDS, WINDOW_SECONDS, Pacer
from walkme_heap.delivery.sender import HeapRefused, RetriesExhausted, RetryPolicy, Sender


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def events(identity: str, count: int, start: int = 0) -> list[dict]:
    return [
        {"identity": identity, "event": "E", "idempotency_key": f"k-{identity}-{start + i:06d}"}
        for i in range(count)
    ]


def max_in_any_window(sent: list[tuple[float, dict]], identity: str | None = None) -> int:
    times = sorted(t for t, e in sent if identity is None or e["identity"] == identity)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - WINDOW_SECONDS:
            j += 1
        best = max(best, i - j + 1)
    return best


def drain(pacer: Pacer, clock: Clock, max_events: int = 1000) -> list[tuple[float, dict]]:
    sent: list[tuple[float, dict]] = []
    while pacer.pending:
        batch = pacer.take(max_events)
        sent.extend((clock.now, e) for e in batch)
        pacer.acknowledged(batch)
    return sent


def test_limits_hold_in_every_sixty_second_window() -> None:
    clock = Clock()
    pacer = Pacer(app_limit=300, identity_limit=50, clock=clock, sleep=clock.sleep)
    pacer.add(events("heavy", 200) + [e for i in range(20) for e in events(f"u{i}", 20)])
    sent = drain(pacer, clock, max_events=100)
    assert len(sent) == 600 and pacer.pending == 0
    assert max_in_any_window(sent) <= 300
    assert max(max_in_any_window(sent, f"u{i}") for i in range(20)) <= 50
    assert max_in_any_window(sent, "heavy") <= 50
    assert pacer.waited_seconds > 0


def test_a_heavy_identity_does_not_stall_the_others() -> None:
    clock = Clock()
    pacer = Pacer(app_limit=None, identity_limit=10, clock=clock, sleep=clock.sleep)
    pacer.add(events("heavy", 100) + events("light", 5))
    first = pacer.take(1000)
    assert Counter(e["identity"] for e in first) == {"heavy": 10, "light": 5}
    pacer.acknowledged(first)
    second = pacer.take(1000)  # waits for the heavy identity's window to open again
    assert clock.sleeps and sum(clock.sleeps) >= WINDOW_SECONDS and max(clock.sleeps) <= 5.0
    assert Counter(e["identity"] for e in second) == {"heavy": 10}


def test_batches_mix_identities_round_robin() -> None:
    pacer = Pacer(app_limit=None, identity_limit=None)
    pacer.add(events("a", 300) + events("b", 300) + events("c", 300))
    batch = pacer.take(300, per_identity=100)
    assert Counter(e["identity"] for e in batch) == {"a": 100, "b": 100, "c": 100}


def test_without_wait_an_empty_batch_is_returned() -> None:
    clock = Clock()
    pacer = Pacer(app_limit=5, identity_limit=None, clock=clock, sleep=clock.sleep)
    pacer.add(events("a", 10))
    pacer.acknowledged(pacer.take(100))
    assert pacer.take(100, wait=False) == [] and clock.sleeps == []
    assert len(pacer.take(100)) == 5
    assert sum(clock.sleeps) == pytest.approx(WINDOW_SECONDS + MARGIN_SECONDS)


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


def test_the_app_budget_is_shared_with_other_runs() -> None:
    clock = Clock()
    others = {"usage": 80}
    asked: list[float] = []

    def usage(seconds: float) -> int:
        asked.append(seconds)
        return others["usage"]

    pacer = Pacer(app_limit=100, identity_limit=None, clock=clock, sleep=clock.sleep, shared_usage=usage)
    pacer.add(events("a", 50))
    assert len(pacer.take(1000)) == 20  # 80 of the app's 100 a minute were used by another run
    others["usage"] = 0  # the other run's events left the window
    clock.now += 1.0
    assert len(pacer.take(1000)) == 30
    assert asked and all(s == WINDOW_SECONDS + MARGIN_SECONDS for s in asked)


@pytest.mark.parametrize("room", [3, 1000])
def test_longest_first_is_a_stable_sort_by_queue_length(room: int) -> None:
    """The partial sort (many identities) and the full sort give the order sorted() would."""
    import random

    rng = random.Random(5)
    pacer = Pacer(app_limit=None, identity_limit=None)
    for i in range(500):
        pacer.add([{"identity": f"u{i}", "n": j} for j in range(rng.choice([1, 1, 2, 3, 7, 40]))])
    expected = sorted(pacer._queues, key=lambda i: len(pacer._queues[i]), reverse=True)
    assert list(pacer._longest_first(room)) == expected


class FakeBudget:
    """A shared budget of ``limit`` events per window, as another process would see it."""

    def __init__(self, clock: Clock, limit: int) -> None:
        self.clock, self.limit = clock, limit
        self.stamps: list[tuple[float, int]] = []  # (when, events) of every reservation
        self.calls: list[str] = []

    def used(self) -> int:
        return sum(n for t, n in self.stamps if t > self.clock() - WINDOW_SECONDS)

    def reserve(self, wanted: int) -> tuple[int, float]:
        granted = max(0, min(wanted, self.limit - self.used()))
        self.calls.append(f"reserve {wanted}->{granted}")
        if granted:
            self.stamps.append((self.clock(), granted))
            return granted, 0.0
        return 0, self.stamps[0][0] + WINDOW_SECONDS - self.clock()

    def resize(self, used: int) -> None:
        self.calls.append(f"resize {used}")
        when, _ = self.stamps[-1]
        self.stamps[-1] = (when, used)

    def acknowledged(self) -> None:
        self.calls.append("acknowledged")


def test_a_shared_budget_replaces_the_app_window() -> None:
    """Reserved before each batch, shrunk to what the identity limits let through, waited for when
    another process holds it all; the pacer's own app window is not consulted."""
    clock = Clock()
    budget = FakeBudget(clock, limit=120)
    budget.stamps.append((clock(), 100))  # another process sent 100 just now
    pacer = Pacer(app_limit=120, identity_limit=15, clock=clock, sleep=clock.sleep, budget=budget)
    pacer.add([{"identity": f"u{i % 2}", "n": i} for i in range(60)])  # two identities, 15/min each
    first = pacer.take(1000)
    assert len(first) == 20 and budget.calls[:2] == ["reserve 60->20", "resize 20"]
    pacer.acknowledged(first)
    # Nothing left of the shared budget: it waits for the window. Then the budget has room, but
    # u0's 15 (acknowledged later than the budget's stamps) still hold: only u1's 10 go.
    second = pacer.take(1000)
    assert "reserve 40->0" in budget.calls and pacer.waited_seconds >= WINDOW_SECONDS - 1
    assert len(second) == 10 and {e["identity"] for e in second} == {"u1"}
    assert budget.calls[-2:] == ["reserve 40->40", "resize 10"] and budget.used() <= 120
