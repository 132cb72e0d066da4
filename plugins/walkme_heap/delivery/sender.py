"""Send a batch until Heap acknowledges it: retries with backoff, and isolation of refused events.

- Network errors, timeouts and 5xx are retried with exponential backoff and full jitter, honouring
  a positive ``Retry-After``, until ``max_seconds`` have passed since the batch's first attempt (one
  budget per batch, however it is split); then ``RetriesExhausted`` stops the run. Nothing
  unacknowledged is lost: the ledger holds only what Heap acknowledged; the next try sends the rest.
- A 429 is not slept on here: ``Throttled`` hands the unacknowledged events back to the outbox, whose
  pacer waits and builds the next batch from what fits.
- A 400 naming one event (Heap's validator: ``postBody.events[3]...``) sends that event alone (refused
  again, naming it: rejected with Heap's message) and the others together. A refusal naming no
  event, or a 413, splits the batch in halves. A 400 that is not about events stops the run with
  ``HeapRefused``, its events unsent, not rejected (a proxy's or WAF's page, a change of Heap's
  API): both halves of a batch refused whole without naming an event, or one event refused without
  being named. Isolation costs at most ``RetryPolicy.split_requests(n)`` requests for a batch of n:
  room to isolate a tenth of its events (at least ``max_split_requests``); more refused events than
  that is not a few bad rows but a systematic refusal, and stops the run the same way.
- Any other answer (a redirect, 401, 403, 404, a 2xx that is not Heap's 200 ...) is a configuration
  problem: ``HeapRefused`` stops the run.

Each stopping error carries ``delivery``: what was acknowledged and rejected before it.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from walkme_heap.delivery.batching import Batch
from walkme_heap.delivery.client import HeapClient, HeapRequestError
from walkme_heap.heap_api import DEFAULT_RETRY_SECONDS

log = logging.getLogger(__name__)
_NAMED = {noun: re.compile(rf"\b{noun}\[(\d+)\]") for noun in ("events", "users")}


@dataclass(frozen=True)
class RetryPolicy:
    max_seconds: float = DEFAULT_RETRY_SECONDS  # per batch, from its first attempt
    base_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    max_split_requests: int = 64  # requests that isolating refused events may cost per batch, at least
    max_refused_share: float = 0.1  # ... or enough to isolate this share of its events (2 requests each)

    def split_requests(self, events: int) -> int:
        """The requests isolating refused events may cost in a batch of ``events``."""
        return max(self.max_split_requests, math.ceil(2 * self.max_refused_share * events))

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
        return rng() * min(self.max_backoff_seconds, self.base_seconds * 2 ** (attempt - 1))

    def throttle_pause(self, retry_after: float | None, in_a_row: int, rng: Callable[[], float]) -> float:
        """The pause after the ``in_a_row``-th 429 in a row: Heap's Retry-After, else the backoff,
        never less than the base (full jitter may draw ~0, and the next POST would go at once)."""
        if retry_after is not None:
            return retry_after
        return max(self.base_seconds, self.backoff(in_a_row, rng))


@dataclass
class Rejected:
    event: dict[str, Any]
    message: str
    attempts: int


@dataclass
class Delivery:
    """What became of one batch: acknowledged sub-batches and rejected events."""

    acknowledged: list[Batch] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    attempts: int = 0
    retries: int = 0

    def settled(self) -> int:
        return sum(len(b) for b in self.acknowledged) + len(self.rejected)

    def unsettled(self, batch: Batch, key: str = "idempotency_key") -> list[dict[str, Any]]:
        """The batch's items neither acknowledged nor rejected, in order, told apart by ``key``
        (an event's idempotency key; a user's identity, once in a request)."""
        settled = {item[key] for b in self.acknowledged for item in b.events}
        settled.update(r.event[key] for r in self.rejected)
        return [item for item in batch.events if item[key] not in settled]


class Stopped(RuntimeError):
    """The batch's delivery stopped; ``delivery`` holds what was acknowledged and rejected before."""

    delivery: Delivery


class RetriesExhausted(Stopped):
    """A batch could not be delivered within the retry budget."""


class HeapRefused(Stopped):
    """Heap (or what answers in its place) refused in a way no retry or split can fix."""


class Throttled(Stopped):
    """Heap answered 429: the batch's unacknowledged events go back to the pacer.

    :param pause: Heap's ``Retry-After`` in seconds, if it sent a usable one.
    """

    def __init__(self, message: str, pause: float | None) -> None:
        super().__init__(message)
        self.pause = pause


def named_event(error: HeapRequestError, size: int, noun: str = "events") -> int | None:
    """The index of the event (``noun``: or user) a 400 names (Heap's validator path:
    ``postBody.events[3]``), if it names one of ``size``."""
    match = _NAMED[noun].search(error.message) if error.status == 400 else None
    if match is None or int(match.group(1)) >= size:
        return None
    return int(match.group(1))


class Sender:
    def __init__(
        self,
        client: HeapClient,
        policy: RetryPolicy | None = None,
        *,
        on_acknowledged: Callable[[Batch], None] | None = None,
        on_wait: Callable[[], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        path: str | None = None,
        noun: str = "events",
        before_post: Callable[[Batch], None] | None = None,
    ) -> None:
        """``path``: where to post (None: the track API); ``noun``: what a batch holds (``events``,
        or ``users`` for add_user_properties), in messages and in the 400's path naming one;
        ``before_post``: called before every request with what it holds (a per-identity pacer)."""
        self.before_post = before_post
        self.client = client
        self.post = client.post if path is None else functools.partial(client.post, path=path)
        self.noun = noun
        self.policy = policy or RetryPolicy()
        self.on_acknowledged = on_acknowledged
        self.on_wait = on_wait  # after each wait between attempts (progress, the run's heartbeat)
        self.sleep = sleep
        self.clock = clock
        self.rng = rng

    def deliver(self, batch: Batch) -> Delivery:
        """Deliver ``batch``; raise a ``Stopped`` error (with the partial delivery) when it cannot."""
        delivery = Delivery()
        self._started = self.clock()
        self._split_total = self._split_budget = self.policy.split_requests(len(batch))
        self._last_refusal: HeapRequestError | None = None
        try:
            error = self._post(batch, delivery)
            if error is not None:
                self._isolate(batch, error, delivery)
        except Stopped as exc:
            exc.delivery = delivery
            raise
        return delivery

    def _post(self, batch: Batch, delivery: Delivery, *, splitting: bool = False) -> HeapRequestError | None:
        """Post until acknowledged (None) or refused for its content (that error is returned)."""
        attempt = 0
        while True:
            if splitting:
                if self._split_budget <= 0:
                    raise HeapRefused(
                        f"isolating the events Heap refused in a batch took "
                        f"{self._split_total} requests without an end (room for "
                        f"a tenth of a batch's events, max_refused_share): a systematic refusal, not a "
                        f"few bad rows; the rest of the batch was not sent. Heap's last answer: "
                        f"{self._last_refusal}"
                    )
                self._split_budget -= 1
            attempt += 1
            delivery.attempts += 1
            if self.before_post is not None:
                self.before_post(batch)
            try:
                self.post(batch.body)
            except HeapRequestError as exc:
                if exc.rejects_content:
                    exc.attempts = attempt
                    self._last_refusal = exc
                    return exc
                if exc.status == 429:
                    message = f"Heap throttled a batch of {len(batch)} {self.noun}: {exc}"
                    raise Throttled(message, exc.retry_after) from exc
                if not exc.retryable:
                    raise HeapRefused(f"Heap refused a batch of {len(batch)} {self.noun}: {exc}") from exc
                self._pause(exc, attempt, len(batch))
                delivery.retries += 1
                continue
            delivery.acknowledged.append(batch)
            if self.on_acknowledged is not None:
                self.on_acknowledged(batch)
            return None

    def _pause(self, exc: HeapRequestError, attempt: int, size: int) -> None:
        """Wait before the next attempt, or raise RetriesExhausted past the batch's budget."""
        pause = exc.retry_after if exc.retry_after is not None else self.policy.backoff(attempt, self.rng)
        if self.clock() + pause - self._started > self.policy.max_seconds:
            raise RetriesExhausted(
                f"a batch of {size} {self.noun} was not acknowledged after {attempt} attempts "
                f"in {self.clock() - self._started:.0f} s (limit {self.policy.max_seconds:.0f} s); "
                f"last answer: {exc}"
            ) from exc
        log.info(
            "attempt %d of a batch of %d %s failed (%s); retrying in %.1f s",
            attempt,
            size,
            self.noun,
            exc,
            pause,
        )
        self.sleep(pause)
        if self.on_wait is not None:
            self.on_wait()

    def _isolate(self, batch: Batch, error: HeapRequestError, delivery: Delivery) -> None:
        """Find the events Heap refuses in ``batch`` (refused with ``error``); deliver the others."""
        if len(batch) == 1:
            if error.status == 400 and named_event(error, 1, self.noun) is None:
                one = self.noun[:-1]  # "event", "user"
                raise HeapRefused(
                    f"Heap refused a single {one} without naming it: the refusal is not about the {one} "
                    f"(a proxy's or firewall's page, or a change of Heap's API?); it was not sent. "
                    f"Heap's answer: {error}"
                )
            delivery.rejected.append(Rejected(batch.events[0], str(error), error.attempts))
            return
        index = named_event(error, len(batch), self.noun)
        if index is not None:  # that event alone, settled at once, then the others
            for part in batch.isolate(index):
                part_error = self._post(part, delivery, splitting=True)
                if part_error is not None:
                    self._isolate(part, part_error, delivery)
            return
        halves = batch.halves()
        errors = [self._post(half, delivery, splitting=True) for half in halves]
        refused_whole = [
            e is not None and named_event(e, len(h), self.noun) is None
            for e, h in zip(errors, halves, strict=True)
        ]
        if error.status == 400 and all(refused_whole):
            raise HeapRefused(
                f"Heap refused a batch of {len(batch)} {self.noun} whole, and each half of it again: "
                "the refusal is not about an event (a proxy's or firewall's page, or a change of "
                f"Heap's API?); these events were not sent. Heap's answer: {errors[-1]}"
            )
        for half, half_error in zip(halves, errors, strict=True):
            if half_error is not None:
                self._isolate(half, half_error, delivery)
