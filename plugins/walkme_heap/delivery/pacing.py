"""Pacing to Heap's limits, and fair batches.

Heap allows 15,000 events a minute per app and 1,000 per identity (``heap_api``). The app's limit is
the ``AppBudget``'s (``delivery/budget.py``: this process alone, or shared through the ledger); the
pacer asks it before every batch. It keeps this process's per-identity windows itself and adds what
other runs sent to each identity (``AppBudget.others``: yesterday's run of a backfill, another
pipeline into the app), and tells the budget the identities of each batch it takes. Each batch is
built from per-identity queues, at most 100 events of one identity per pass, longest queues first: a
heavy user's events use their own budget as soon as it frees and otherwise wait, while everyone
else's flow. Events Heap throttled anyway (429) come back (``put_back``) and the pacer pauses
(``pause``) before it builds the next batch from what fits.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from walkme_heap.delivery.budget import AppBudget, IdentityUsage, SlidingWindow, identity_hash

WAIT_SLICE_SECONDS = 5.0  # sleep in slices, so progress is logged while waiting


class Pacer:
    """Holds events waiting to be sent and hands out batches that fit the limits now.

    :param budget: the app's budget (None: no per-app limit).
    :param identity_limit: events per window per identity (None: no limit).
    """

    def __init__(
        self,
        budget: AppBudget | None,
        identity_limit: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.budget = budget
        self.identity_limit = identity_limit
        self.clock = clock
        self.sleep = sleep
        self.on_wait = on_wait  # called between waiting slices (progress logs)
        self._identities: dict[str, SlidingWindow] = {}
        self._queues: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self._others: IdentityUsage = {}  # other runs' recent sends, by identity hash
        self._hashes: dict[str, int] = {}
        self._paused_until = float("-inf")
        self.pending = 0
        self.waited_seconds = 0.0

    def add(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._queues.setdefault(event["identity"], deque()).append(event)
        self.pending += len(events)

    def put_back(self, events: list[dict[str, Any]]) -> None:
        """Events taken but not acknowledged (throttled): first in their queues again, and what the
        budget held for them goes back."""
        self._requeue(events)
        if self.budget is not None:
            self.budget.done()

    def _requeue(self, events: list[dict[str, Any]]) -> None:
        for event in reversed(events):
            identity = event["identity"]
            queue = self._queues.get(identity)
            if queue is None:
                queue = self._queues[identity] = deque()
                self._queues.move_to_end(identity, last=False)
            queue.appendleft(event)
        self.pending += len(events)

    def done(self) -> None:
        """Every batch of the last take was answered (or the run stops): the budget keeps what
        Heap acknowledged of it, stamped now."""
        if self.budget is not None:
            self.budget.done()

    def pause(self, seconds: float) -> None:
        """Take nothing for ``seconds`` (Heap throttled a batch)."""
        self._paused_until = max(self._paused_until, self.clock() + seconds)

    def _hash(self, identity: str) -> int:
        value = self._hashes.get(identity)
        if value is None:
            if len(self._hashes) > 100_000:
                self._hashes.clear()
            value = self._hashes[identity] = identity_hash(identity)
        return value

    def _others_used(self, identity: str, now: float) -> int:
        """Events other runs sent to ``identity`` that are still in the window."""
        if not self._others:
            return 0
        entries = self._others.get(self._hash(identity))
        return sum(n for until, n in entries if until > now) if entries else 0

    def _identity_room(self, identity: str, now: float) -> int:
        if self.identity_limit is None:
            return 1 << 30
        others = self._others_used(identity, now)
        window = self._identities.get(identity)
        if window is None:
            return self.identity_limit - others
        window.prune(now)
        if window.total == 0:
            del self._identities[identity]
            return self.identity_limit - others
        return self.identity_limit - window.total - others

    def take(self, max_events: int, *, wait: bool = True, per_identity: int = 100) -> list[dict[str, Any]]:
        """The next batch, at most ``max_events``, fitting both limits now.

        With ``wait`` it sleeps until at least one pending event fits; without, it may return an
        empty batch (the caller can read more rows meanwhile).
        """
        while True:
            if not self.pending:
                return []
            now = self.clock()
            if now < self._paused_until:
                if not wait:
                    return []
                self._wait(self._paused_until, now)
                continue
            if self.budget is None:
                batch, budget_wait = self._select(max_events, per_identity, now), None
            else:
                batch, budget_wait = self._take_from_budget(max_events, per_identity, now)
            if batch or not wait:
                return batch
            free_at = now + budget_wait if budget_wait else self._identity_free_at(now)
            self._wait(free_at, now)

    def _take_from_budget(
        self, max_events: int, per_identity: int, now: float
    ) -> tuple[list[dict[str, Any]], float | None]:
        """A batch chosen while the budget holds the app (with other runs' identity usage in view):
        (batch, None), or ([], seconds until the app has room)."""
        assert self.budget is not None
        batch: list[dict[str, Any]] = []

        def choose(room: int, others: IdentityUsage) -> tuple[int, dict[int, int]]:
            self._others = others if self.identity_limit is not None else {}
            batch.extend(self._select(room, per_identity, now))
            return len(batch), self._identity_counts(batch)

        try:
            taken, wait = self.budget.take(min(max_events, self.pending), choose)
        except BaseException:
            self._requeue(batch)  # the budget could not record it: nothing was taken
            raise
        return (batch, None) if taken else ([], wait or None)

    def _identity_counts(self, batch: list[dict[str, Any]]) -> dict[int, int]:
        """The batch's events per identity hash, for other runs' pacing (none without a limit)."""
        if self.identity_limit is None:
            return {}
        counts: dict[str, int] = {}
        for event in batch:
            counts[event["identity"]] = counts.get(event["identity"], 0) + 1
        return {self._hash(identity): count for identity, count in counts.items()}

    def _wait(self, free_at: float, now: float) -> None:
        """Sleep one slice towards ``free_at``, reporting progress."""
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

    def _identity_free_at(self, now: float) -> float:
        """When the first queued identity may send again (its own or another run's sends leave the
        window)."""
        candidates = []
        if self.identity_limit is not None:
            for identity in self._queues:
                window = self._identities.get(identity)
                if window is not None:
                    candidates.append(window.free_at(1, self.identity_limit))
                if self._others:
                    entries = self._others.get(self._hash(identity), ())
                    candidates.extend(until for until, _ in entries if until > now)
        return min(candidates, default=now + 0.05)

    def acknowledged(self, events: list[dict[str, Any]]) -> None:
        """Record a batch Heap accepted (stamped now, after its answer)."""
        now = self.clock()
        if self.budget is not None:
            self.budget.acknowledged(len(events))
        if self.identity_limit is not None:
            counts: dict[str, int] = {}
            for event in events:
                counts[event["identity"]] = counts.get(event["identity"], 0) + 1
            for identity, count in counts.items():
                self._identities.setdefault(identity, SlidingWindow()).add(now, count)
