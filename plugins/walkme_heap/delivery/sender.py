"""Send a batch until Heap acknowledges it: retries with backoff, and bisection of bad events.

- Network errors, timeouts, 429 and 5xx are retried with exponential backoff and full jitter,
  honouring ``Retry-After`` when Heap sends one, until ``max_seconds`` have passed since the batch's
  first attempt; then ``RetriesExhausted`` stops the run (nothing unacknowledged is lost: the ledger
  holds only what Heap acknowledged, so the next try sends the rest).
- A 400 (or 413) answer to a batch of several events splits it in halves, recursively, until the
  events Heap refuses are isolated; each of those is rejected with Heap's message, the rest delivered.
- Any other answer (401, 403, 404 ...) is a configuration problem: ``HeapRefused`` stops the run.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from walkme_heap.delivery.batching import Batch
from walkme_heap.delivery.client import HeapClient, HeapRequestError
from walkme_heap.heap_api import DEFAULT_RETRY_SECONDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_seconds: float = DEFAULT_RETRY_SECONDS  # per batch, from its first attempt
    base_seconds: float = 1.0
    max_backoff_seconds: float = 60.0

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
        return rng() * min(self.max_backoff_seconds, self.base_seconds * 2 ** (attempt - 1))


class RetriesExhausted(RuntimeError):
    """A batch could not be delivered within the retry budget."""


class HeapRefused(RuntimeError):
    """Heap answered with an error that no retry or split can fix (e.g. 401, 403, 404)."""


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
    throttled: int = 0


class Sender:
    def __init__(
        self,
        client: HeapClient,
        policy: RetryPolicy | None = None,
        *,
        on_acknowledged: Callable[[Batch], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.policy = policy or RetryPolicy()
        self.on_acknowledged = on_acknowledged
        self.sleep = sleep
        self.clock = clock
        self.rng = rng

    def deliver(self, batch: Batch) -> Delivery:
        delivery = Delivery()
        self._deliver(batch, delivery)
        return delivery

    def _deliver(self, batch: Batch, delivery: Delivery) -> None:
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            delivery.attempts += 1
            try:
                self.client.post(batch.body)
            except HeapRequestError as exc:
                if exc.rejects_content:
                    if len(batch) == 1:
                        delivery.rejected.append(Rejected(batch.events[0], str(exc), attempt))
                        return
                    for half in batch.halves():
                        self._deliver(half, delivery)
                    return
                if not exc.retryable:
                    raise HeapRefused(f"Heap refused a batch of {len(batch)} events: {exc}") from exc
                delivery.throttled += exc.status == 429
                pause = (
                    exc.retry_after if exc.retry_after is not None else self.policy.backoff(attempt, self.rng)
                )
                if self.clock() + pause - started > self.policy.max_seconds:
                    raise RetriesExhausted(
                        f"a batch of {len(batch)} events was not acknowledged after {attempt} attempts "
                        f"in {self.clock() - started:.0f} s (limit {self.policy.max_seconds:.0f} s); "
                        f"last answer: {exc}"
                    ) from exc
                delivery.retries += 1
                log.info(
                    "attempt %d of a batch of %d failed (%s); retrying in %.1f s",
                    attempt,
                    len(batch),
                    exc,
                    pause,
                )
                self.sleep(pause)
                continue
            delivery.acknowledged.append(batch)
            if self.on_acknowledged is not None:
                self.on_acknowledged(batch)
            return
