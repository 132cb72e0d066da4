"""The outbox: new events waiting for Heap, sent as the limits allow, recorded as Heap acknowledges.

Events queue in the pacer (per identity) and leave in batches that fit the app's budget and the
identities' limits, packed within the count and byte caps and delivered by the sender (retries,
bisection). Each acknowledged batch is recorded (``record``: the ledger) before the next is sent;
an event too large for any request, or one Heap refuses, becomes an outcome with its reason.

``DryRunOutbox`` stands in for it in a dry run: it counts what would be sent and logs a few
payloads, identities masked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from walkme_heap.delivery.batching import Batch, Batcher
from walkme_heap.delivery.budget import AppBudget
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.pacing import Pacer
from walkme_heap.delivery.sender import HeapRefused, RetriesExhausted, RetryPolicy, Sender
from walkme_heap.outcomes import Outcomes
from walkme_heap.summary import ReplaySummary

log = logging.getLogger(__name__)


class Undelivered(RuntimeError):
    """Heap did not acknowledge a batch within the retry budget, or refused the request; what was
    acknowledged before is recorded, the rest (``summary.unsent``) waits for the next run."""


class Outbox:
    """Queues new events; sends once ``pending_events`` wait (``put``), and all at the end (``finish``).

    :param record: stores an acknowledged batch (the ledger), before anything else is sent.
    :param progress: called after each acknowledged batch and while waiting for the limits.
    """

    def __init__(
        self,
        client: HeapClient,
        *,
        budget: AppBudget | None,
        identity_limit: int | None,
        max_events: int,
        max_bytes: int,
        retry: RetryPolicy,
        pending_events: int,
        outcomes: Outcomes,
        summary: ReplaySummary,
        record: Callable[[Batch], None],
        progress: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.pacer = Pacer(budget, identity_limit, clock=clock, sleep=sleep, on_wait=progress)
        self.batcher = Batcher(client.app_id, max_events, max_bytes)
        self.sender = Sender(client, retry, on_acknowledged=self._acknowledged, sleep=sleep, clock=clock)
        self.max_events, self.max_bytes, self.pending_events = max_events, max_bytes, pending_events
        self.outcomes, self.summary, self.record, self.progress = outcomes, summary, record, progress

    @property
    def pending(self) -> int:
        return self.pacer.pending

    @property
    def waited_seconds(self) -> float:
        return self.pacer.waited_seconds

    def put(self, events: list[dict[str, Any]]) -> None:
        self.pacer.add(events)
        if self.pacer.pending >= self.pending_events:
            # Far behind the limits (a heavy identity): wait rather than read more into memory.
            self._send(wait=self.pacer.pending >= 4 * self.pending_events)

    def finish(self) -> None:
        self._send(wait=True)

    def _acknowledged(self, batch: Batch) -> None:
        self.record(batch)
        self.pacer.acknowledged(batch.events)
        self.summary.sent += len(batch)
        self.summary.batches += 1
        self.progress()

    def _send(self, *, wait: bool) -> None:
        """Send what the limits allow now (``wait``: until nothing is pending)."""
        summary = self.summary
        while self.pacer.pending:
            events = self.pacer.take(self.max_events, wait=wait)
            if not events:
                return
            batches, oversized = self.batcher.pack(events)
            for event in oversized:
                self.outcomes.oversized(event, self.max_bytes)
            for position, batch in enumerate(batches):
                try:
                    delivery = self.sender.deliver(batch)
                except (RetriesExhausted, HeapRefused) as exc:
                    summary.unsent = sum(len(b) for b in batches[position:]) + self.pacer.pending
                    raise Undelivered(
                        f"{exc}. {summary.sent} events were acknowledged and recorded; the rest "
                        "will be sent when the day runs again."
                    ) from exc
                summary.retries += delivery.retries
                summary.throttled += delivery.throttled
                for rejected in delivery.rejected:
                    self.outcomes.rejected(rejected)


def mask_identity(event: dict[str, Any]) -> dict[str, Any]:
    """A copy safe for logs: identities are personal data."""
    identity = str(event.get("identity", ""))
    return {**event, "identity": f"<{len(identity)} chars>"}


class DryRunOutbox:
    """A dry run's outbox: nothing is sent; events count as sent, ``samples`` are logged masked."""

    pending = 0
    waited_seconds = 0.0

    def __init__(self, summary: ReplaySummary, samples: int) -> None:
        self.summary = summary
        self.samples: list[dict[str, Any]] = []
        self.room = samples

    def put(self, events: list[dict[str, Any]]) -> None:
        self.summary.sent += len(events)
        self.samples.extend(events[: max(0, self.room - len(self.samples))])

    def finish(self) -> None:
        for event in self.samples:
            log.info("dry run sample payload: %s", orjson.dumps(mask_identity(event)).decode())
