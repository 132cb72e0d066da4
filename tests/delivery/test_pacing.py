"""Pacing with a fake clock: Heap's limits in every window, fairness between identities, and the
app's budget (this process's, observed from others, or reserved) asked before every batch."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.helpers import FakeClock as Clock
from tests.helpers import OthersUsage
from tests.helpers import identity_events as events
from walkme_heap.delivery.budget import (
    MARGIN_SECONDS,
    WINDOW_SECONDS,
    LocalBudget,
    ObservedBudget,
    identity_hash,
)
from walkme_heap.delivery.pacing import Pacer


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
        sent.extend((clock(), e) for e in batch)
        pacer.acknowledged(batch)
    return sent


def test_limits_hold_in_every_sixty_second_window() -> None:
    clock = Clock()
    pacer = Pacer(LocalBudget(300, clock), identity_limit=50, clock=clock, sleep=clock.sleep)
    pacer.add(events("heavy", 200) + [e for i in range(20) for e in events(f"u{i}", 20)])
    sent = drain(pacer, clock, max_events=100)
    assert len(sent) == 600 and pacer.pending == 0
    assert max_in_any_window(sent) <= 300
    assert max(max_in_any_window(sent, f"u{i}") for i in range(20)) <= 50
    assert max_in_any_window(sent, "heavy") <= 50
    assert pacer.waited_seconds > 0


def test_a_heavy_identity_does_not_stall_the_others() -> None:
    clock = Clock()
    pacer = Pacer(None, identity_limit=10, clock=clock, sleep=clock.sleep)
    pacer.add(events("heavy", 100) + events("light", 5))
    first = pacer.take(1000)
    assert Counter(e["identity"] for e in first) == {"heavy": 10, "light": 5}
    pacer.acknowledged(first)
    second = pacer.take(1000)  # waits for the heavy identity's window to open again
    assert clock.sleeps and sum(clock.sleeps) >= WINDOW_SECONDS and max(clock.sleeps) <= 5.0
    assert Counter(e["identity"] for e in second) == {"heavy": 10}


def test_batches_mix_identities_round_robin() -> None:
    pacer = Pacer(None, identity_limit=None)
    pacer.add(events("a", 300) + events("b", 300) + events("c", 300))
    batch = pacer.take(300, per_identity=100)
    assert Counter(e["identity"] for e in batch) == {"a": 100, "b": 100, "c": 100}


def test_without_wait_an_empty_batch_is_returned() -> None:
    clock = Clock()
    pacer = Pacer(LocalBudget(5, clock), identity_limit=None, clock=clock, sleep=clock.sleep)
    pacer.add(events("a", 10))
    pacer.acknowledged(pacer.take(100))
    assert pacer.take(100, wait=False) == [] and clock.sleeps == []
    assert len(pacer.take(100)) == 5
    assert sum(clock.sleeps) == pytest.approx(WINDOW_SECONDS + MARGIN_SECONDS)


def test_the_app_budget_is_shared_with_other_runs() -> None:
    clock = Clock()
    others = OthersUsage(80)
    budget = ObservedBudget(100, others, clock)
    pacer = Pacer(budget, identity_limit=None, clock=clock, sleep=clock.sleep)
    pacer.add(events("a", 50))
    assert len(pacer.take(1000)) == 20  # 80 of the app's 100 a minute were used by another run
    others.sent = 0  # the other run's events left the window
    clock.advance(1.0)
    assert len(pacer.take(1000)) == 30
    assert others.asked and all(s == WINDOW_SECONDS + MARGIN_SECONDS for s in others.asked)


@pytest.mark.parametrize("room", [3, 1000])
def test_longest_first_is_a_stable_sort_by_queue_length(room: int) -> None:
    """The partial sort (many identities) and the full sort give the order sorted() would."""
    import random

    rng = random.Random(5)
    pacer = Pacer(None, identity_limit=None)
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
        self.resized: list[dict[int, int]] = []  # each take's events per identity hash

    def used(self) -> int:
        return sum(n for t, n in self.stamps if t > self.clock() - WINDOW_SECONDS)

    def others(self) -> dict:
        return {}

    def take(self, wanted: int, choose) -> tuple[int, float]:
        granted = max(0, min(wanted, self.limit - self.used()))
        if not granted:
            self.calls.append(f"reserve {wanted}->0")
            return 0, self.stamps[0][0] + WINDOW_SECONDS - self.clock()
        taken, identities = choose(granted, self.others())
        self.calls += [f"reserve {wanted}->{granted}", f"resize {taken}"]
        self.resized.append(dict(identities))
        if taken:
            self.stamps.append((self.clock(), taken))
        return taken, 0.0

    def acknowledged(self, events: int) -> None:
        self.calls.append("acknowledged")

    def done(self) -> None:
        self.calls.append("done")


def test_a_shared_budget_replaces_the_app_window() -> None:
    """Reserved before each batch, shrunk to what the identity limits let through, waited for when
    another process holds it all; the pacer's own app window is not consulted."""
    clock = Clock()
    budget = FakeBudget(clock, limit=120)
    budget.stamps.append((clock(), 100))  # another process sent 100 just now
    pacer = Pacer(budget, identity_limit=15, clock=clock, sleep=clock.sleep)
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


class OthersBudget(FakeBudget):
    """A shared budget that also reports another run's recent sends to identities."""

    def __init__(self, clock: Clock, limit: int, others: dict[int, list[tuple[float, int]]]) -> None:
        super().__init__(clock, limit)
        self._others = others

    def others(self) -> dict:
        return self._others


def test_an_identity_waits_for_what_another_run_sent_it() -> None:
    """Yesterday's run sent 25 of the heavy identity's 30 a minute 10 s ago: today's run sends 5 now,
    the rest once those leave the window; the light identity is not held up. The budget learns each
    batch's identities (by hash) for the runs after it."""
    clock = Clock()
    heavy = identity_hash("heavy")
    budget = OthersBudget(clock, limit=1000, others={heavy: [(clock() + 50.0, 25)]})
    pacer = Pacer(budget, identity_limit=30, clock=clock, sleep=clock.sleep)
    pacer.add(events("heavy", 20) + events("light", 20))
    first = pacer.take(1000)
    assert Counter(e["identity"] for e in first) == {"heavy": 5, "light": 20}
    assert budget.resized[-1] == {heavy: 5, identity_hash("light"): 20}
    pacer.acknowledged(first)
    second = pacer.take(1000)
    assert Counter(e["identity"] for e in second) == {"heavy": 15} and 49.0 <= sum(clock.sleeps) <= 51.0


def test_throttled_events_go_back_first_and_the_pacer_pauses() -> None:
    clock = Clock()
    pacer = Pacer(LocalBudget(1000, clock), identity_limit=None, clock=clock, sleep=clock.sleep)
    pacer.add(events("a", 5))
    taken = pacer.take(3)
    pacer.put_back(taken)
    pacer.pause(7.0)
    assert pacer.pending == 5 and pacer.take(10, wait=False) == []
    again = pacer.take(10)
    assert [e["idempotency_key"] for e in again] == [e["idempotency_key"] for e in events("a", 5)]
    assert sum(clock.sleeps) == pytest.approx(7.0)
