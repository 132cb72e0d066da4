"""The Heap app's rate budget: how many events may be sent now under Heap's per-app limit.

One interface, ``AppBudget``, which the pacer asks before every batch, and the three ways a budget
is kept (``app_budget`` picks one):

- ``LocalBudget``: this process alone (no ledger): a sliding window of what Heap acknowledged.
- ``ReservedBudget``: shared with every run into the app (shards, days, pipelines, retries, on any
  worker) through the ledger database: each batch's events are reserved atomically before the batch
  is built, so together they never exceed the limit. ``ledger/budget.py`` stores the reservations.
- ``ObservedBudget``: for a ledger database that cannot serialise reservations: this process's own
  window plus what other runs recorded as acknowledged in the last window.

Windows are stamped when Heap's answer arrives, so they close no earlier than Heap's.

Heap's per-identity limit is shared the same way: the pacer keeps its own per-identity windows and
asks the budget what other runs (the previous day's run of a backfill, another pipeline into the
same app, a retry) sent or are sending per identity (``others``), and tells it how many events each
identity has in the batch it takes (``resize``). Identities are stored only as 64-bit hashes.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

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


# identity hash -> [(when those events leave the window, by the pacer's clock), events]
IdentityUsage = dict[int, list[tuple[float, int]]]


def identity_hash(identity: str) -> int:
    """A 64-bit hash of an identity: what the ledger stores instead of the identity (personal data)."""
    return int.from_bytes(hashlib.blake2b(identity.encode(), digest_size=8).digest(), "little")


class Usage(NamedTuple):
    """What other runs sent into the app in the last window: events, and per identity hash when
    they leave the window (seconds from now)."""

    events: int
    identities: Mapping[int, list[tuple[float, int]]]


class AppBudget(Protocol):
    """What the pacer needs from the app's budget."""

    def reserve(self, wanted: int) -> tuple[int, float]:
        """Take up to ``wanted`` events of budget: (granted, seconds until one more fits if 0)."""
        ...

    def others(self) -> IdentityUsage:
        """Other runs' recent sends per identity hash, as of the last ``reserve``."""
        ...

    def resize(self, used: int, identities: Mapping[int, int] | None = None) -> None:
        """The last reservation's events that will be sent (the rest goes back), per identity hash."""
        ...

    def acknowledged(self, events: int) -> None:
        """Heap answered a batch of ``events`` events of the last reservation."""
        ...

    def release(self) -> None:
        """The last reservation was not taken (Heap answered 429): what is not acknowledged goes back."""
        ...


def _local(usage: Mapping[int, list[tuple[float, int]]], now: float) -> IdentityUsage:
    """Seconds-from-now entries as times of the pacer's clock."""
    return {identity: [(now + left, n) for left, n in entries] for identity, entries in usage.items()}


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

    def others(self) -> IdentityUsage:
        """No other run is known to this process."""
        return {}

    def resize(self, used: int, identities: Mapping[int, int] | None = None) -> None:
        """Nothing is held before Heap answers: only acknowledged events count."""

    def acknowledged(self, events: int) -> None:
        self.window.add(self.clock(), events)

    def release(self) -> None:
        """Nothing was held."""


class ObservedBudget(LocalBudget):
    """This process's window plus other runs' recent acknowledgements (asked at most once a second).

    ``usage(seconds)`` answers what other runs sent into the app in the last ``seconds``;
    ``record(events, identities)`` tells them what Heap acknowledged to this one.
    """

    def __init__(
        self,
        limit: int,
        usage: Callable[[float], Usage],
        clock: Callable[[], float] = time.monotonic,
        record: Callable[[int, Mapping[int, int]], None] | None = None,
    ) -> None:
        super().__init__(limit, clock)
        self.usage = usage
        self.record = record
        self._asked = (float("-inf"), Usage(0, {}))
        self._identities: Mapping[int, int] = {}

    def _observed(self, now: float) -> Usage:
        asked, value = self._asked
        if now - asked >= 1.0:
            value = self.usage(WINDOW_SECONDS + MARGIN_SECONDS)
            self._asked = (now, value)
        return value

    def _used(self, now: float) -> int:
        return self._observed(now).events

    def others(self) -> IdentityUsage:
        asked, value = self._asked
        return _local(value.identities, asked)

    def resize(self, used: int, identities: Mapping[int, int] | None = None) -> None:
        self._identities = identities or {}

    def acknowledged(self, events: int) -> None:
        super().acknowledged(events)
        if self.record is not None:
            self.record(events, self._identities)

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

    def __init__(
        self,
        store: Reservations,
        app_id: str,
        holder: str,
        limit: int,
        in_flight: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        per_identity: bool = True,
    ) -> None:
        self.store, self.app_id, self.holder, self.limit = store, app_id, holder, limit
        self.in_flight = in_flight
        self.clock = clock
        self.per_identity = per_identity  # share per-identity usage (off without an identity limit)
        self.window = WINDOW_SECONDS + MARGIN_SECONDS
        self._reservation: tuple[int, int] | None = None  # (id, events)
        self._acknowledged = False
        self._others: IdentityUsage = {}

    def reserve(self, wanted: int) -> tuple[int, float]:
        granted, reservation, wait = self.store.reserve(
            self.app_id, self.holder, wanted, self.limit, self.window, self.in_flight
        )
        self._reservation = (reservation, granted) if reservation is not None else None
        self._acknowledged = False
        if granted and self.per_identity:
            now = self.clock()
            self._others = _local(self.store.usage(self.app_id, self.holder, self.window)[1], now)
        return granted, wait

    def others(self) -> IdentityUsage:
        return self._others

    def resize(self, used: int, identities: Mapping[int, int] | None = None) -> None:
        if self._reservation is None:
            return
        reservation = self._reservation[0]
        if not used:
            self.store.settle(reservation, 0)
            self._reservation = None
        elif used != self._reservation[1] or identities:  # keeps its in-flight stamp until Heap answers
            self.store.resize(reservation, used, identities)
            self._reservation = (reservation, used)

    def acknowledged(self, events: int) -> None:
        if self._reservation is not None:
            self.store.settle(*self._reservation)
            self._acknowledged = True

    def release(self) -> None:
        if self._reservation is not None and not self._acknowledged:
            self.store.settle(self._reservation[0], 0)
            self._reservation = None


def app_budget(
    limit: int | None,
    *,
    ledger: Ledger | None,
    app_id: str | None,
    holder: str,
    retry_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    per_identity: bool = True,
) -> AppBudget | None:
    """The budget a run into ``app_id`` keeps: None without a limit, shared when a ledger is kept
    (``per_identity``: with each identity's usage, for runs that pace to the per-identity limit)."""
    if limit is None:
        return None
    if ledger is None or not app_id:
        return LocalBudget(limit, clock)
    store = ledger.budget
    window = WINDOW_SECONDS + MARGIN_SECONDS
    if store.serialisable:
        in_flight = retry_seconds + RESPONSE_SECONDS
        return ReservedBudget(store, app_id, holder, limit, in_flight, clock, per_identity=per_identity)
    return ObservedBudget(
        limit,
        lambda seconds: Usage(*store.usage(app_id, holder, seconds)),
        clock,
        record=lambda events, identities: store.record(app_id, holder, events, identities, window),
    )
