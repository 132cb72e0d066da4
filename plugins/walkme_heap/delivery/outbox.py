"""The outbox: new events waiting for Heap, sent as the limits allow, recorded as Heap acknowledges.

Events queue in the pacer (per identity) and leave in batches that fit the app's budget and the
identities' limits, packed within the count and byte caps and delivered by the sender (retries,
isolation of refused events). Each acknowledged batch is recorded (``record``: the ledger) before
the next is sent; an event too large for any request, or one Heap refuses, becomes an outcome with
its reason. A batch Heap throttles (429) goes back to the pacer, which pauses (Heap's Retry-After,
else a jittered backoff) and builds the next batch from what fits; throttling that lasts longer
than the retry budget without any acknowledgement stops the run like any undelivered batch.

``DryRunOutbox`` stands in for it in a dry run: it counts what would be sent and logs a few
payloads, identities masked.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import orjson

from walkme_heap.delivery.batching import Batch, Batcher
from walkme_heap.delivery.budget import AppBudget
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.pacing import Pacer
from walkme_heap.delivery.sender import Delivery, HeapRefused, RetryPolicy, Sender, Stopped, Throttled
from walkme_heap.outcomes import Outcomes
from walkme_heap.summary import ReplaySummary

log = logging.getLogger(__name__)


class Undelivered(RuntimeError):
    """Heap did not acknowledge a batch within the retry budget, or refused the request; what was
    acknowledged before is recorded, the rest (``summary.unsent``) waits for the next run.

    ``retryable`` is False when Heap (or what answers in its place) refused in a way a later try of
    the same configuration cannot fix (a redirect, 401/403/404, a refusal of every event).
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


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
        self.sender = Sender(
            client, retry, on_acknowledged=self._acknowledged, on_wait=progress, sleep=sleep, clock=clock
        )
        self.max_events, self.max_bytes, self.pending_events = max_events, max_bytes, pending_events
        self.outcomes, self.summary, self.record, self.progress = outcomes, summary, record, progress
        self.retry, self.clock, self.rng = retry, clock, random.random
        self._throttled_since: float | None = None  # the first 429 since the last acknowledgement
        self._throttled_in_a_row = 0
        self._in_hand = 0  # events taken from the pacer and not yet sent, rejected or put back

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
        self.record(batch)  # in the ledger: sent, whatever fails next
        self.summary.sent += len(batch)
        self.summary.batches += 1
        newest = max((t for e in batch.events if (t := e.get("timestamp")) is not None), default=None)
        if newest is not None and (self.summary.newest_sent is None or newest > self.summary.newest_sent):
            self.summary.newest_sent = newest  # ISO text of one format: compared as text
        self._in_hand -= len(batch)
        self._throttled_since, self._throttled_in_a_row = None, 0
        self.pacer.acknowledged(batch.events)
        self.progress()

    def _send(self, *, wait: bool) -> None:
        """Send what the limits allow now (``wait``: until nothing is pending). Whatever stops it,
        the events not sent or rejected are counted ``unsent``."""
        try:
            while self.pacer.pending:
                self._in_hand = 0
                events = self.pacer.take(self.max_events, wait=wait)
                if not events:
                    return
                self._in_hand = len(events)
                self._send_taken(events)
                self.pacer.done()  # the budget now holds only what Heap took, from now
        except Undelivered:
            raise
        except BaseException:  # the ledger or the budget failed: nothing is lost, all is counted
            self.summary.unsent = self._in_hand + self.pacer.pending
            raise

    def _send_taken(self, events: list[dict[str, Any]]) -> None:
        """Pack and deliver one take of the pacer."""
        batches, oversized = self.batcher.pack(events)
        for event in oversized:
            self.outcomes.oversized(event, self.max_bytes)
        self._in_hand -= len(oversized)
        for position, batch in enumerate(batches):
            try:
                delivery = self.sender.deliver(batch)
            except Throttled as exc:
                self._settle(exc.delivery)
                back = exc.delivery.unsettled(batch) + _events(batches[position + 1 :])
                self._in_hand = 0
                self.pacer.put_back(back)
                self._throttled(exc)
                return  # the pacer builds the next batch when the pause is over
            except Stopped as exc:
                self._settle(exc.delivery)
                self._stop(exc)
            self._settle(delivery)

    def _settle(self, delivery: Delivery) -> None:
        """Count a batch's retries and rejected events (its acknowledged ones are counted as Heap
        answers them)."""
        self.summary.retries += delivery.retries
        for rejected in delivery.rejected:
            self.outcomes.rejected(rejected)
        self._in_hand -= len(delivery.rejected)

    def _throttled(self, exc: Throttled) -> None:
        """Pause the pacer after a 429; stop when throttling outlasts the retry budget."""
        now = self.clock()
        self.summary.throttled += 1
        self._throttled_in_a_row += 1
        if self._throttled_since is None:
            self._throttled_since = now
        pause = self.retry.throttle_pause(exc.pause, self._throttled_in_a_row, self.rng)
        if now + pause - self._throttled_since > self.retry.max_seconds:
            self._stop(
                exc,
                f"Heap answered 429 to every batch for {now - self._throttled_since:.0f} s "
                f"(retry limit {self.retry.max_seconds:.0f} s): {exc}",
            )
        log.info("Heap throttled a batch (429); pausing %.1f s before the next batch", pause)
        self.pacer.pause(pause)

    def _stop(self, exc: Stopped, message: str | None = None) -> None:
        """Stop the run: what was taken and not settled, and everything pending, is unsent."""
        unsent = self.summary.unsent = self._in_hand + self.pacer.pending
        with suppress(Exception):  # the budget keeps only what Heap took (else it expires)
            self.pacer.done()
        raise Undelivered(
            f"{message or exc}. {self.summary.sent} events were acknowledged and recorded; the rest "
            f"({unsent}) will be sent when the day runs again.",
            retryable=not isinstance(exc, HeapRefused),
        ) from exc


def _events(batches: list[Batch]) -> list[dict[str, Any]]:
    return [event for batch in batches for event in batch.events]


def masked_for_log(event: dict[str, Any]) -> dict[str, Any]:
    """A copy safe for logs: identities and property values are personal data (a user variable may
    hold an e-mail address); names, types and lengths stay, to check the mapping."""
    identity = str(event.get("identity", ""))
    masked = {**event, "identity": f"<{len(identity)} chars>"}
    if isinstance(event.get("properties"), dict):
        masked["properties"] = {name: _shape(value) for name, value in event["properties"].items()}
    return masked


def _shape(value: Any) -> str:
    if isinstance(value, str):
        return f"<text, {len(value)} chars>"
    return f"<{type(value).__name__}>"


class DryRunOutbox:
    """A dry run's outbox: nothing is sent. Events are packed into request bodies as a real run
    packs them, so an event too large for any request is counted invalid as it would be; the rest
    count as sent, and ``samples`` are logged masked.

    :param app_id: the Heap app the run would send to (its length is part of each body), if known.
    """

    pending = 0
    waited_seconds = 0.0

    def __init__(
        self,
        summary: ReplaySummary,
        samples: int,
        *,
        outcomes: Outcomes,
        app_id: str | None,
        max_events: int,
        max_bytes: int,
    ) -> None:
        self.summary, self.outcomes, self.max_bytes = summary, outcomes, max_bytes
        self.batcher = Batcher(app_id or "", max_events, max_bytes)
        self.samples: list[dict[str, Any]] = []
        self.room = samples

    def put(self, events: list[dict[str, Any]]) -> None:
        _, oversized = self.batcher.pack(events)  # encoded as a real run would, then dropped
        for event in oversized:
            self.outcomes.oversized(event, self.max_bytes)
        self.summary.sent += len(events) - len(oversized)
        if oversized:  # samples show what would be sent
            too_large = {id(event) for event in oversized}
            events = [event for event in events if id(event) not in too_large]
        self.samples.extend(events[: max(0, self.room - len(self.samples))])

    def finish(self) -> None:
        for event in self.samples:
            log.info("dry run sample payload: %s", orjson.dumps(masked_for_log(event)).decode())
