"""Where user properties are sent: each identity's latest attribute values, through Heap's bulk
``add_user_properties``, only what changed.

After a run's events, its users go in requests of at most 1000 (each identity once per request),
within the byte cap. Before each request the ledger (``ledger/user_properties.py``) says what Heap
holds of those users; a property is sent when Heap holds none, or one from an earlier or the same
event time with another value (``force``: also an equal one). A known value from a later event is
never overwritten; a known equal value from an earlier event gets this later time, written without
a request. Each acknowledged request is recorded before the next is sent.

Requests are paced to Heap's 30 requests per 30 s per identity (every request of this process that
names an identity counts, retries and isolation included); retries, 429s and refused users work as
for events (``sender``): a refused user is isolated, counted ``users_refused`` and dead-lettered
with Heap's message; the others are sent. A dry run counts what would be sent and writes nothing.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from walkme_heap.delivery.batching import Batch, Batcher
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.outbox import Undelivered
from walkme_heap.delivery.sender import HeapRefused, RetryPolicy, Sender, Stopped, Throttled
from walkme_heap.heap_api import (
    DEFAULT_MAX_BATCH_BYTES,
    MAX_USERS_PER_REQUEST,
    USER_PROPERTIES_PATH,
    USER_PROPERTIES_REQUESTS_PER_WINDOW,
    USER_PROPERTIES_WINDOW_SECONDS,
)
from walkme_heap.ledger.user_properties import KnownProperties, UserPropertyStates, digest, value_hash
from walkme_heap.mapping.user_properties import LatestUserValues
from walkme_heap.outcomes import Outcomes
from walkme_heap.summary import ReplaySummary

log = logging.getLogger(__name__)
MARGIN_SECONDS = 0.5  # clocks differ: a request counts in Heap's window a little longer than in ours

# One user's properties to send: its request entry and the ledger rows to store once acknowledged.
_Rows = list[tuple[str, str, str, int]]


class RequestsPerIdentity:
    """Heap's add_user_properties limit: ``limit`` requests per ``window`` seconds per identity.
    ``admit`` waits until a request naming these identities fits, then counts it."""

    def __init__(
        self,
        limit: int | None = USER_PROPERTIES_REQUESTS_PER_WINDOW,
        window: float = USER_PROPERTIES_WINDOW_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit, self.window = limit, window + MARGIN_SECONDS
        self.clock, self.sleep = clock, sleep
        self._sent: dict[str, deque[float]] = {}
        self.waited_seconds = 0.0

    def admit(self, identities: list[str]) -> None:
        if not self.limit:
            return
        now = self.clock()
        free_at = now
        for identity in identities:
            times = self._sent.get(identity)
            if times is None:
                continue
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= self.limit:
                free_at = max(free_at, times[len(times) - self.limit] + self.window)
        if free_at > now:
            log.info(
                "add_user_properties: an identity's 30 requests per 30 s are used; waiting %.1f s",
                free_at - now,
            )
            self.sleep(free_at - now)
            self.waited_seconds += free_at - now
            now = self.clock()
        for identity in identities:
            self._sent.setdefault(identity, deque()).append(now)


@dataclass
class UserSyncOptions:
    dry_run: bool = False
    force: bool = False
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES  # the byte cap of a request (the run's, as for events)
    retry: RetryPolicy | None = None
    requests_per_identity: int | None = USER_PROPERTIES_REQUESTS_PER_WINDOW
    progress_seconds: float = 10.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


class UserSync:
    """Sends one run's users (``send``); counts into ``summary``; refused users to ``outcomes``."""

    def __init__(
        self,
        pipeline: str,
        client: HeapClient | None,
        states: UserPropertyStates | None,
        app_id: str | None,
        options: UserSyncOptions,
        summary: ReplaySummary,
        outcomes: Outcomes,
        heartbeat: Callable[[], None] = lambda: None,
    ) -> None:
        self.pipeline, self.client, self.app_id = pipeline, client, app_id
        # Without an app there is nothing to compare with: Heap keeps user properties per app.
        self.states = states if app_id is not None else None
        self.options, self.summary, self.outcomes, self.heartbeat = options, summary, outcomes, heartbeat
        self.retry = options.retry or RetryPolicy()
        self.limiter = RequestsPerIdentity(
            options.requests_per_identity, clock=options.clock, sleep=options.sleep
        )
        self._names: dict[str, str] = {}  # property name -> its hash
        self._rows: dict[str, _Rows] = {}  # identity -> ledger rows, while its request is out
        self._last_log = options.clock()
        # one packer and one sender for the run's requests (none in a dry run: it sends nothing)
        self.batcher: Batcher | None = None
        self.sender: Sender | None = None
        if client is not None:
            self.batcher = Batcher(client.app_id, MAX_USERS_PER_REQUEST, options.max_bytes, field="users")
            self.sender = Sender(
                client,
                self.retry,
                on_acknowledged=self._acknowledged,
                on_wait=heartbeat,
                sleep=options.sleep,
                clock=options.clock,
                path=USER_PROPERTIES_PATH,
                noun="users",
                before_post=self._before_post,
            )

    def send(self, latest: LatestUserValues) -> None:
        """Decide and send, a thousand users at a time; raise ``Undelivered`` when Heap does not
        acknowledge (what was acknowledged is recorded; the rest is ``users_unsent``)."""
        summary = self.summary
        summary.users = len(latest)
        if not summary.users:
            return
        log.info(
            "user properties: %d user(s) with attribute values in the window; %s",
            summary.users,
            "a dry run: counting what would be sent" if self.options.dry_run else "sending what changed",
        )
        group: list[tuple[str, dict[str, tuple[Any, int]]]] = []
        try:
            for user in latest.users():
                group.append(user)
                if len(group) == MAX_USERS_PER_REQUEST:
                    self._group(group)
                    group = []
            if group:
                self._group(group)
        except BaseException:
            summary.users_unsent = (
                summary.users - summary.users_updated - summary.users_unchanged - summary.users_refused
            )
            raise
        self._log()

    def _group(self, users: list[tuple[str, dict[str, tuple[Any, int]]]]) -> None:
        """Up to a thousand users: compare with the ledger, store what only moved on in time, send
        the changes."""
        hashes = {identity: digest(identity) for identity, _ in users}
        known: KnownProperties = self.states.known(self.app_id, hashes.values()) if self.states else {}
        to_send: list[dict[str, Any]] = []
        later: _Rows = []
        for identity, properties in users:
            entry, rows, moved = self._changes(hashes[identity], properties, known)
            later.extend(moved)
            if entry:
                to_send.append({"identity": identity, "properties": entry})
                self._rows[identity] = rows
            else:
                self.summary.users_unchanged += 1
        if self.options.dry_run:
            self.summary.users_updated += len(to_send)
            self.summary.user_values_sent += sum(len(u["properties"]) for u in to_send)
            self._rows.clear()
            return
        if self.states is not None:
            self.states.store(self.app_id, self.pipeline, later, sent=False)  # type: ignore[arg-type]
        if to_send:
            self._deliver(to_send)

    def _changes(
        self, identity: str, properties: dict[str, tuple[Any, int]], known: KnownProperties
    ) -> tuple[dict[str, Any], _Rows, _Rows]:
        """(properties to send, their ledger rows, rows of known values that only get a later time)."""
        entry: dict[str, Any] = {}
        rows: _Rows = []
        moved: _Rows = []
        for name, (value, ms) in properties.items():
            prop = self._names.get(name) or self._names.setdefault(name, digest(name))
            hashed = value_hash(value)
            held = known.get((identity, prop))
            if held is not None and ms < held.event_ms:
                continue  # Heap holds a value from a later event: never overwritten by an older one
            if held is None or hashed != held.value_hash or self.options.force:
                entry[name] = value
                rows.append((identity, prop, hashed, ms))
            elif ms > held.event_ms:
                moved.append((identity, prop, hashed, ms))
        return entry, rows, moved

    def _deliver(self, users: list[dict[str, Any]]) -> None:
        """Send ``users`` (each identity once) until each is acknowledged or refused."""
        assert self.batcher is not None and self.sender is not None  # made with the client
        batcher, sender = self.batcher, self.sender
        batches, oversized = batcher.pack(users)
        for user in oversized:
            self._rows.pop(user["identity"], None)
            self.summary.users_refused += 1
            self.outcomes.user_refused(
                user, f"one user alone is over {self.options.max_bytes} bytes", "user_too_large"
            )
        pending = deque(batches)
        throttled_since: float | None = None
        in_a_row = 0
        while pending:
            batch = pending.popleft()
            try:
                delivery = sender.deliver(batch)
            except Throttled as exc:
                self.summary.user_retries += exc.delivery.retries
                self._refused(exc.delivery.rejected)
                rest = exc.delivery.unsettled(batch, key="identity")
                now = self.options.clock()
                throttled_since = now if throttled_since is None else throttled_since
                in_a_row += 1
                self.summary.user_throttled += 1
                pause = self.retry.throttle_pause(exc.pause, in_a_row, random.random)
                if now + pause - throttled_since > self.retry.max_seconds:
                    raise Undelivered(
                        f"Heap answered 429 to add_user_properties for {now - throttled_since:.0f} s "
                        f"(retry limit {self.retry.max_seconds:.0f} s): {exc}. "
                        f"{self.summary.users_updated} users were acknowledged and recorded; the rest are "
                        "sent when the day runs again",
                        retryable=True,
                    ) from exc
                log.info("Heap throttled add_user_properties (429); pausing %.1f s", pause)
                self.options.sleep(pause)
                self.heartbeat()
                if rest:
                    pending.extendleft(reversed(batcher.pack(rest)[0]))
                continue
            except Stopped as exc:
                self.summary.user_retries += exc.delivery.retries
                self._refused(exc.delivery.rejected)
                raise Undelivered(
                    f"add_user_properties: {exc}. {self.summary.users_updated} users were acknowledged and "
                    "recorded; the rest are sent when the day runs again",
                    retryable=not isinstance(exc, HeapRefused),
                ) from exc
            throttled_since, in_a_row = None, 0
            self.summary.user_retries += delivery.retries
            self._refused(delivery.rejected)

    def _before_post(self, batch: Batch) -> None:
        """Every request counts against its identities' limit, whatever Heap answers."""
        self.limiter.admit([user["identity"] for user in batch.events])
        self.summary.user_requests += 1

    def _acknowledged(self, batch: Batch) -> None:
        rows = [row for user in batch.events for row in self._rows.pop(user["identity"], ())]
        if self.states is not None:
            stale = self.states.store(self.app_id, self.pipeline, rows)  # type: ignore[arg-type]
            if stale:
                self.summary.user_values_stale += stale
                log.warning(
                    "user properties: %d value(s) Heap acknowledged are older than values another run "
                    "recorded meanwhile (two runs into this app at once): Heap may hold the older ones. "
                    "They are marked unknown in the ledger; the next run whose window holds those users "
                    "(re-run the newest such day) sends their values again",
                    stale,
                )
        self.summary.users_updated += len(batch)
        self.summary.user_values_sent += len(rows)
        self.heartbeat()
        if self.options.clock() - self._last_log >= self.options.progress_seconds:
            self._log()

    def _refused(self, rejected: list[Any]) -> None:
        for refused in rejected:
            self._rows.pop(refused.event["identity"], None)
            self.summary.users_refused += 1
            self.outcomes.user_refused(refused.event, refused.message, "rejected_by_heap", refused.attempts)

    def _log(self) -> None:
        self._last_log = self.options.clock()
        s = self.summary
        log.info(
            "user properties: %d of %d user(s) %s, %d unchanged, %d refused by Heap (%d values, %d requests)",
            s.users_updated,
            s.users,
            "would be updated" if self.options.dry_run else "updated",
            s.users_unchanged,
            s.users_refused,
            s.user_values_sent,
            s.user_requests,
        )
