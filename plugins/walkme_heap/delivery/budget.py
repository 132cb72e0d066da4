"""The Heap app's rate budget: how many events may be sent now under Heap's per-app limit.

One interface, ``AppBudget``, which the pacer asks before every batch, and the three ways a budget
is kept (``app_budget`` picks one):

- ``LocalBudget``: this process alone (no ledger): a sliding window of what Heap acknowledged.
- ``ReservedBudget``: shared with every run into the app (shards, days, pipelines, retries, on any
  worker) through the ledger database: each batch's events are reserved atomically before the batch
  is built, so together they never exceed the limit. ``ledger/budget.py`` stores the reservations.
- ``ObservedBudget``: for a ledger database that cannot serialise reservations: this process's own
  window plus what other runs recorded as acknowledged in the last window.

Windows are stamped when Heap's answer arrives, so they close no earlier than Heap's. The
per-identity limit is not here: one process owns an identity's events (shards split by identity),
so the pacer keeps those windows itself.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from walkme_heap.heap_api import RATE_WINDOW_SECONDS

if TYPE_CHECKING:
    from walkme_heap.ledger import Ledger
    from walkme_heap.ledger.budget import Reservations

WINDOW_SECONDS = RATE_WINDOW_SECONDS
MARGIN_SECONDS = 0.25  # added to every window: clocks and network never line up exactly
RESPONSE_SECONDS = 60.0  # how long one request may take to be answered (beyond its retry budget)


@dataclass
class SlidingWindow:
    """Counts of the last ``WINDOW_SECONDS`` (plus margin), as (time, count) entries."""

    entries: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def prune(self, now: float) -> None:
        cutoff = now - WINDOW_SECONDS - MARGIN_SECONDS
        while self.entries and self.entries[0][0] <= cutoff:
            self.total -= self.entries.popleft()[1]

    def add(self, now: float, count: int) -> None:
        self.entries.append((now, count))
        self.total += count

    def free_at(self, needed: int, limit: int) -> float:
        """When ``needed`` more would fit (entries expire oldest first)."""
        excess = self.total + needed - limit
        for when, count in self.entries:
            excess -= count
            if excess <= 0:
                return when + WINDOW_SECONDS + MARGIN_SECONDS
        return float("inf")


class AppBudget(Protocol):
    """What the pacer needs from the app's budget."""

    def reserve(self, wanted: int) -> tuple[int, float]:
        """Take up to ``wanted`` events of budget: (granted, seconds until one more fits if 0)."""
        ...

    def resize(self, used: int) -> None:
        """The last reservation's events that will be sent (the rest goes back)."""
        ...

    def acknowledged(self, events: int) -> None:
        """Heap answered a batch of ``events`` events of the last reservation."""
        ...


class LocalBudget:
    """The budget of one process: what Heap acknowledged to it in the last window."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self.window = SlidingWindow()

    def _used(self, now: float) -> int:
        """Events counted against the app now, besides this process's own window."""
        return 0

    def _free_at(self, now: float, used: int) -> float:
        return self.window.free_at(1 + used, self.limit)

    def reserve(self, wanted: int) -> tuple[int, float]:
        now = self.clock()
        self.window.prune(now)
        used = self._used(now)
        free = self.limit - self.window.total - used
        if free <= 0:
            return 0, max(0.0, self._free_at(now, used) - now)
        return min(wanted, free), 0.0

    def resize(self, used: int) -> None:
        """Nothing is held before Heap answers: only acknowledged events count."""

    def acknowledged(self, events: int) -> None:
        self.window.add(self.clock(), events)


class ObservedBudget(LocalBudget):
    """This process's window plus other runs' recent acknowledgements (asked at most once a second).

    ``others(seconds)`` answers how many events other runs sent into the app in the last ``seconds``.
    """

    def __init__(
        self, limit: int, others: Callable[[float], int], clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(limit, clock)
        self.others = others
        self._asked = (float("-inf"), 0)

    def _used(self, now: float) -> int:
        asked, value = self._asked
        if now - asked >= 1.0:
            value = self.others(WINDOW_SECONDS + MARGIN_SECONDS)
            self._asked = (now, value)
        return value

    def _free_at(self, now: float, used: int) -> float:
        # Others' usage is read again every second; their sends may expire before ours.
        own = super()._free_at(now, used)
        return min(own, now + 1.0) if used else own


class ReservedBudget:
    """The app's budget shared through the ledger: reserved before each batch, settled on answer.

    A reservation not yet answered counts as if sent ``in_flight`` seconds from now: as long as its
    batch may be retried. A run that dies keeps its reservations until they expire, so a retry on
    another worker cannot exceed the limit.
    """

    def __init__(self, store: Reservations, app_id: str, holder: str, limit: int, in_flight: float) -> None:
        self.store, self.app_id, self.holder, self.limit = store, app_id, holder, limit
        self.in_flight = in_flight
        self.window = WINDOW_SECONDS + MARGIN_SECONDS
        self._reservation: tuple[int, int] | None = None  # (id, events)

    def reserve(self, wanted: int) -> tuple[int, float]:
        granted, reservation, wait = self.store.reserve(
            self.app_id, self.holder, wanted, self.limit, self.window, self.in_flight
        )
        self._reservation = (reservation, granted) if reservation is not None else None
        return granted, wait

    def resize(self, used: int) -> None:
        if self._reservation is not None and used != self._reservation[1]:
            reservation = self._reservation[0]
            if used:  # keeps its in-flight stamp until Heap answers
                self.store.resize(reservation, used)
                self._reservation = (reservation, used)
            else:
                self.store.settle(reservation, 0)
                self._reservation = None

    def acknowledged(self, events: int) -> None:
        if self._reservation is not None:
            self.store.settle(*self._reservation)


def app_budget(
    limit: int | None,
    *,
    ledger: Ledger | None,
    app_id: str | None,
    holder: str,
    retry_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> AppBudget | None:
    """The budget a run into ``app_id`` keeps: None without a limit, shared when a ledger is kept."""
    if limit is None:
        return None
    if ledger is None or not app_id:
        return LocalBudget(limit, clock)
    if ledger.budget.serialisable:
        in_flight = retry_seconds + RESPONSE_SECONDS
        return ReservedBudget(ledger.budget, app_id, holder, limit, in_flight)
    acks = ledger.acks
    return ObservedBudget(
        limit, lambda seconds: acks.recent_usage(app_id, seconds, exclude_run=holder), clock
    )
