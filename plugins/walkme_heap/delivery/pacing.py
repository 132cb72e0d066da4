"""Pacing to Heap's limits: events per 60 s per app and per identity, and fair batches.

Heap allows 15,000 events a minute per app and 1,000 per identity (heap-track-api.md). The pacer
keeps the events it acknowledged in sliding 60-second windows (stamped when Heap's answer arrived,
so its windows close no earlier than Heap's), and builds each batch from per-identity queues, at most
100 events of one identity per pass, longest queues first: a heavy user's events use their own
budget as soon as it frees and otherwise wait, while everyone else's flow.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

WINDOW_SECONDS = 60.0
MARGIN_SECONDS = 0.25  # added to every window: clocks and network never line up exactly
WAIT_SLICE_SECONDS = 5.0  # sleep in slices, so progress is logged while waiting


class SharedBudget(Protocol):
    """An app's rate budget shared with other processes (see ``Ledger.reserve``)."""

    def reserve(self, wanted: int) -> tuple[int, float]:
        """Take up to ``wanted`` events of budget: (granted, seconds until more frees if 0)."""
        ...

    def resize(self, used: int) -> None:
        """The last reservation's events that will be sent (the rest goes back)."""
        ...

    def acknowledged(self) -> None:
        """Heap answered a batch of the last reservation: it counts one window from now."""
        ...


@dataclass
class _Window:
    entries: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def prune(self, now: float) -> None:
        cutoff = now - WINDOW_SECONDS - MARGIN_SECONDS
        while self.entries and self.entries[0][0] <= cutoff:
            self.total -= self.entries.popleft()[1]

    def free_at(self, needed: int, limit: int) -> float:
        """When ``needed`` more would fit (entries expire oldest first)."""
        excess = self.total + needed - limit
        for when, count in self.entries:
            excess -= count
            if excess <= 0:
                return when + WINDOW_SECONDS + MARGIN_SECONDS
        return float("inf")


class Pacer:
    """Holds events waiting to be sent and hands out batches that fit the limits now."""

    def __init__(
        self,
        app_limit: int | None,
        identity_limit: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[], None] | None = None,
        shared_usage: Callable[[float], int] | None = None,
        budget: SharedBudget | None = None,
    ) -> None:
        self.app_limit = app_limit
        self.identity_limit = identity_limit
        self.clock = clock
        self.sleep = sleep
        self.on_wait = on_wait  # called between waiting slices (progress logs)
        # Events other runs sent into the same app in the last window (a budget shared through the
        # ledger database), given the window's length in seconds; asked at most once a second.
        self.shared_usage = shared_usage
        # Or a budget shared atomically (reserved before each batch): it then replaces this
        # process's own app window, since it counts this process's sends too.
        self.budget = budget
        self._shared = (float("-inf"), 0)
        self._app = _Window()
        self._identities: dict[str, _Window] = {}
        self._queues: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self.pending = 0
        self.waited_seconds = 0.0

    def add(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._queues.setdefault(event["identity"], deque()).append(event)
        self.pending += len(events)

    def _identity_room(self, identity: str, now: float) -> int:
        if self.identity_limit is None:
            return 1 << 30
        window = self._identities.get(identity)
        if window is None:
            return self.identity_limit
        window.prune(now)
        if window.total == 0:
            del self._identities[identity]
            return self.identity_limit
        return self.identity_limit - window.total

    def take(self, max_events: int, *, wait: bool = True, per_identity: int = 100) -> list[dict[str, Any]]:
        """The next batch, at most ``max_events``, fitting both limits now.

        With ``wait`` it sleeps until at least one pending event fits; without, it may return an
        empty batch (the caller can read more rows meanwhile).
        """
        while True:
            now = self.clock()
            room = max_events
            shared_wait = None
            if self.app_limit is not None and self.budget is not None:
                if not self.pending:
                    return []
                room, shared_wait = self.budget.reserve(min(room, self.pending))
                batch = self._select(room, per_identity, now) if room > 0 else []
                if room > 0:
                    self.budget.resize(len(batch))
            else:
                if self.app_limit is not None:
                    self._app.prune(now)
                    room = min(room, self.app_limit - self._app.total - self._others(now))
                batch = self._select(room, per_identity, now) if room > 0 else []
            if batch or not self.pending or not wait:
                return batch
            free_at = now + shared_wait if room <= 0 and shared_wait is not None else self._next_free(now)
            pause = min(WAIT_SLICE_SECONDS, max(0.01, free_at - now))
            self.waited_seconds += pause
            self.sleep(pause)
            if self.on_wait is not None:
                self.on_wait()

    def _select(self, room: int, per_identity: int, now: float) -> list[dict[str, Any]]:
        """Passes over identities with budget, at most ``per_identity`` each per pass."""
        batch: list[dict[str, Any]] = []
        taken: dict[str, int] = {}
        progressed = True
        while room > 0 and progressed:
            progressed = False
            # Longest queues first: a heavy identity's minute budget is used as soon as it is free,
            # so its events do not pile up at the end of the run (everyone else fills the rest).
            for identity in self._longest_first(room):
                if room <= 0:
                    break
                queue = self._queues[identity]
                allowed = min(per_identity, room, self._identity_room(identity, now) - taken.get(identity, 0))
                if allowed <= 0:
                    continue
                count = min(allowed, len(queue))
                batch.extend(queue.popleft() for _ in range(count))
                taken[identity] = taken.get(identity, 0) + count
                room -= count
                progressed = True
                if queue:
                    self._queues.move_to_end(identity)  # others go first next time
                else:
                    del self._queues[identity]
        self.pending -= len(batch)
        return batch

    def _longest_first(self, room: int) -> Iterator[str]:
        """Identities by queue length, longest first, ties in queue order (a stable sort).

        A batch usually fills from the first ``room`` identities, so with many identities queued
        those are found by a partial sort (numpy, no Python call per identity) and the full order
        is computed only if the pass goes on past them.
        """
        identities = list(self._queues)
        n = len(identities)
        lengths = np.fromiter(map(len, self._queues.values()), dtype=np.int64, count=n)
        rank = np.arange(n, dtype=np.int64) - lengths * n  # unique: length first, then position
        if n > 2 * room:
            top = np.argpartition(rank, room)[:room]
            for index in top[np.argsort(rank[top])].tolist():
                yield identities[index]
            for index in np.argsort(rank)[room:].tolist():
                yield identities[index]
        else:
            for index in np.argsort(rank).tolist():
                yield identities[index]

    def _others(self, now: float) -> int:
        if self.shared_usage is None:
            return 0
        asked, value = self._shared
        if now - asked >= 1.0:
            value = self.shared_usage(WINDOW_SECONDS + MARGIN_SECONDS)
            self._shared = (now, value)
        return value

    def _next_free(self, now: float) -> float:
        candidates = []
        if self.app_limit is not None and self._app.total + self._shared[1] >= self.app_limit:
            if self._shared[1]:
                candidates.append(now + 1.0)  # others' usage is re-read every second
            candidates.append(self._app.free_at(1 + self._shared[1], self.app_limit))
        if self.identity_limit is not None:
            for identity in self._queues:
                window = self._identities.get(identity)
                if window is not None:
                    candidates.append(window.free_at(1, self.identity_limit))
        return min(candidates, default=now + 0.05)

    def acknowledged(self, events: list[dict[str, Any]]) -> None:
        """Record a batch Heap accepted (stamped now, after its answer)."""
        now = self.clock()
        if self.budget is not None:
            self.budget.acknowledged()
        elif self.app_limit is not None:
            self._app.entries.append((now, len(events)))
            self._app.total += len(events)
        if self.identity_limit is not None:
            counts: dict[str, int] = {}
            for event in events:
                counts[event["identity"]] = counts.get(event["identity"], 0) + 1
            for identity, count in counts.items():
                window = self._identities.setdefault(identity, _Window())
                window.entries.append((now, count))
                window.total += count
