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
UNLIMITED = 1 << 40  # the app "limit" of a run without one that still shares identities' usage


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


# Picks the batch: given the room under the app's limit (> 0) and what other runs sent per identity,
# returns (events taken, events per identity hash).
Choose = Callable[[int, IdentityUsage], tuple[int, Mapping[int, int]]]


class AppBudget(Protocol):
    """What the pacer needs from the app's budget."""

    def take(self, wanted: int, choose: Choose) -> tuple[int, float]:
        """Call ``choose`` with up to ``wanted`` events of room and other runs' recent sends per
        identity, and hold what it took (and its identities) until Heap answers: (taken, 0.0). With
        no room ``choose`` is not called: (0, seconds until one more event fits). A shared budget
        calls it while it holds the app's budget alone, so no other run picks from the same
        identity usage at the same time."""
        ...

    def acknowledged(self, events: int) -> None:
        """Heap answered a batch of ``events`` events of the last take."""
        ...

    def done(self) -> None:
        """Every batch of the last take was answered, or the rest of it goes back (Heap throttled
        it, or the run stops): keep what Heap acknowledged of it, counted from now."""
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

    def _others(self) -> IdentityUsage:
        """Other runs' recent sends per identity: none known to this process alone."""
        return {}

    def _free_at(self, now: float, used: int) -> float:
        return self.window.free_at(1 + used, self.limit)

    def take(self, wanted: int, choose: Choose) -> tuple[int, float]:
        now = self.clock()
        self.window.prune(now)
        used = self._used(now)
        free = self.limit - self.window.total - used
        if free <= 0:
            return 0, max(0.0, self._free_at(now, used) - now)
        taken, _ = choose(min(wanted, free), self._others())
        return taken, 0.0

    def acknowledged(self, events: int) -> None:
        """Nothing is held before Heap answers: only acknowledged events count."""
        self.window.add(self.clock(), events)

    def done(self) -> None:
        """Nothing was held."""


class ObservedBudget(LocalBudget):
    """This process's window plus other runs' recent acknowledgements (asked at most once a second).

    ``usage(seconds)`` answers what other runs sent into the app in the last ``seconds``;
    ``record(events, identities)`` tells them what Heap acknowledged to this one. Without a lock,
    two runs may pick the same identity at the same moment: the reason ``ReservedBudget`` exists.
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

    def _others(self) -> IdentityUsage:
        asked, value = self._asked
        return _local(value.identities, asked)

    def take(self, wanted: int, choose: Choose) -> tuple[int, float]:
        def chosen(room: int, others: IdentityUsage) -> tuple[int, Mapping[int, int]]:
            taken, identities = choose(room, others)
            self._identities = identities
            return taken, identities

        return super().take(wanted, chosen)

    def acknowledged(self, events: int) -> None:
        super().acknowledged(events)
        if self.record is not None:
            self.record(events, self._identities)
        self._identities = {}  # a take's identities once, with its first acknowledged batch

    def _free_at(self, now: float, used: int) -> float:
        # Others' usage is read again every second; their sends may expire before ours.
        own = super()._free_at(now, used)
        return min(own, now + 1.0) if used else own


class ReservedBudget:
    """The app's budget shared through the ledger: reserved before each batch, settled on answer.

    The batch is chosen while the app's budget is held alone (``Reservations.reserve`` calls
    ``choose`` inside its transaction), with every other run's reservations and their identities
    in view, so no two runs pick from the same room or the same identity's. A reservation not yet
    answered counts as if sent ``in_flight`` seconds from now: as long as its batch may be retried.
    A run that dies keeps its reservations until they expire, so a retry on another worker cannot
    exceed the limit.
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
        self._acknowledged = 0  # events of the reservation Heap acknowledged so far

    def take(self, wanted: int, choose: Choose) -> tuple[int, float]:
        now = self.clock()

        def chosen(room: int, others: Mapping[int, list[tuple[float, int]]]) -> tuple[int, Mapping[int, int]]:
            return choose(room, _local(others, now))

        taken, reservation, wait = self.store.reserve(
            self.app_id,
            self.holder,
            wanted,
            self.limit,
            self.window,
            self.in_flight,
            choose=chosen,
            identities=self.per_identity,
        )
        self._reservation = (reservation, taken) if reservation is not None else None
        self._acknowledged = 0
        return taken, wait

    def acknowledged(self, events: int) -> None:
        """Counted; the reservation keeps its in-flight stamp while the take's other batches may
        still be retried (``done`` settles it)."""
        self._acknowledged += events

    def done(self) -> None:
        """Only what Heap acknowledged of the reservation stays, counted from now (nothing: the
        row goes). Its identity counts stay as chosen: at most an over-count, for one window."""
        if self._reservation is not None:
            self.store.settle(self._reservation[0], min(self._acknowledged, self._reservation[1]))
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
    """The budget a run into ``app_id`` keeps: shared when a ledger is kept (``per_identity``: with
    each identity's usage, for runs that pace to the per-identity limit); without an app limit, one
    that shares only the identities' usage, or None when there is nothing to share."""
    if limit is None:
        if not per_identity or ledger is None or not app_id:
            return None
        limit = UNLIMITED
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
