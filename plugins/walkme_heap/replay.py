"""The replay loop, start to end: read -> map -> dedupe -> filter (ledger) -> pace -> batch ->
send (retry, bisect) -> record (ledger, dead letters) -> summarise.

No Airflow import: the operator adapts this to a task; tests and benchmarks call it directly.
Every row read ends in exactly one bucket: sent, already sent, skipped, invalid or rejected.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson

from walkme_heap.deadletters import DeadLetters
from walkme_heap.dedupe import DEFAULT_MEMORY_KEYS, SeenKeys
from walkme_heap.delivery.batching import DEFAULT_MAX_BYTES, MAX_EVENTS, Batch, Batcher
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.pacing import MARGIN_SECONDS, WINDOW_SECONDS, Pacer
from walkme_heap.delivery.sender import HeapRefused, RetriesExhausted, RetryPolicy, Sender
from walkme_heap.ledger import Ledger
from walkme_heap.mapping.columns import bind_columns
from walkme_heap.mapping.keys import key_hashes
from walkme_heap.mapping.mapper import Mapper, stripped_text
from walkme_heap.mapping.spec import MappingSpec
from walkme_heap.sharding import Shard
from walkme_heap.sources.base import Chunk
from walkme_heap.summary import ReplaySummary
from walkme_heap.window import Window

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0
DEFAULT_APP_LIMIT = 15_000  # events per minute per app (heap-track-api.md)
DEFAULT_IDENTITY_LIMIT = 1_000  # events per minute per identity per app


class Source(Protocol):
    """What the loop needs from a source: its origins (files, queries), headers, chunks."""

    def origins(self) -> list[str]: ...
    def headers(self, origin: str) -> list[str]: ...
    def chunks(self, origin: str) -> Iterator[Chunk]: ...


class ReplayError(RuntimeError):
    """The run stopped; ``summary`` says how far it got (everything sent is in the ledger)."""

    def __init__(self, message: str, summary: ReplaySummary) -> None:
        super().__init__(message)
        self.summary = summary


class DeliveryError(ReplayError):
    """Heap did not acknowledge a batch within the retry budget, or refused the request."""


class TooManyInvalid(ReplayError):
    """Every good event was sent, but more rows than ``max_invalid_ratio`` were invalid."""


@dataclass
class ReplayOptions:
    dry_run: bool = False
    force: bool = False  # ignore the ledger: send the whole window again (Heap drops repeats)
    max_events: int = MAX_EVENTS
    max_bytes: int = DEFAULT_MAX_BYTES
    app_limit: int | None = DEFAULT_APP_LIMIT
    identity_limit: int | None = DEFAULT_IDENTITY_LIMIT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_invalid_ratio: float = 0.1
    run_id: str | None = None
    sample_payloads: int = 3
    pending_events: int = 20_000  # events waiting for budget before reading stops
    row_limit: int | None = None  # a trial run: stop reading after this many rows
    shard: Shard | None = None  # replay only this shard's rows (identities hashed into K shards)
    dedupe_memory_keys: int = DEFAULT_MEMORY_KEYS  # seen keys in memory before they go to disk


def mask_identity(event: dict[str, Any]) -> dict[str, Any]:
    """A copy safe for logs: identities are personal data."""
    identity = str(event.get("identity", ""))
    return {**event, "identity": f"<{len(identity)} chars>"}


def _source_row(chunk: Chunk, position: int) -> tuple[int | None, dict[str, Any]]:
    row = chunk.frame.iloc[position]
    return int(chunk.frame.index[position]), row.to_dict()


class LedgerBudget:
    """The Heap app's rate budget, shared through the ledger database by every run into the app.

    Each batch's events are reserved before it is built (so shards, days and pipelines running at
    once never exceed the limit together) and re-stamped when Heap answers. A reservation not yet
    answered counts as if sent ``in_flight`` seconds from now: as long as its batch may be retried.
    """

    def __init__(self, ledger: Ledger, app_id: str, holder: str, limit: int, retry: RetryPolicy) -> None:
        self.ledger, self.app_id, self.holder, self.limit = ledger, app_id, holder, limit
        self.in_flight = retry.max_seconds + 60.0  # the retry budget plus one request's timeout
        self.window = WINDOW_SECONDS + MARGIN_SECONDS
        self._reservation: tuple[int, int] | None = None  # (id, events)

    def reserve(self, wanted: int) -> tuple[int, float]:
        granted, reservation, wait = self.ledger.reserve(
            self.app_id, self.holder, wanted, self.limit, self.window, self.in_flight
        )
        self._reservation = (reservation, granted) if reservation is not None else None
        return granted, wait

    def resize(self, used: int) -> None:
        if self._reservation is not None and used != self._reservation[1]:
            reservation = self._reservation[0]
            if used:  # keeps its in-flight stamp until Heap answers
                self.ledger.resize(reservation, used)
                self._reservation = (reservation, used)
            else:
                self.ledger.settle(reservation, 0)
                self._reservation = None

    def acknowledged(self) -> None:
        if self._reservation is not None:
            self.ledger.settle(*self._reservation)


class _Run:
    """State of one replay; ``run()`` drives it."""

    def __init__(
        self,
        pipeline: str,
        source: Source,
        spec: MappingSpec,
        window: Window,
        client: HeapClient | None,
        options: ReplayOptions,
        ledger: Ledger | None,
        dead_letters: DeadLetters | None,
        acked: np.ndarray,
    ) -> None:
        self.pipeline, self.source, self.spec, self.window = pipeline, source, spec, window
        self.options, self.ledger, self.dead_letters = options, ledger, dead_letters
        self.summary = ReplaySummary(
            pipeline=pipeline,
            window=window.as_dict(),
            dry_run=options.dry_run,
            force=options.force,
            shard=f"{options.shard.index + 1}/{options.shard.count}" if options.shard else None,
        )
        self.started = time.monotonic()
        self.last_progress = self.started
        self.seen = SeenKeys(options.dedupe_memory_keys)
        self.acked = acked  # hashes Heap already acknowledged for this window (sorted)
        self.samples: list[dict[str, Any]] = []
        self.app_id = client.app_id if client else None
        # This process's acknowledgements in the ledger (a retry of the same Airflow run is another
        # process whose earlier sends still count against the shared budget).
        shard_tag = f"#{options.shard.label}" if options.shard else ""
        self.run_token = f"{options.run_id or 'walkme-heap'}{shard_tag}#{uuid.uuid4().hex[:12]}"
        shared, budget = None, None
        if ledger is not None and self.app_id and options.app_limit is not None:
            if ledger.shares_budget:
                budget = LedgerBudget(ledger, self.app_id, self.run_token, options.app_limit, options.retry)
            else:  # a database without serialisable reservations: read others' recent sends
                shared = self._shared_usage
        self.pacer = Pacer(
            options.app_limit,
            options.identity_limit,
            on_wait=self.progress,
            shared_usage=shared,
            budget=budget,
        )
        self.batcher = Batcher(client.app_id if client else "dry-run", options.max_events, options.max_bytes)
        self.sender = Sender(client, options.retry, on_acknowledged=self._acknowledged) if client else None

    # -- bookkeeping --------------------------------------------------------------------------
    def _dead(self, **record: Any) -> None:
        if self.dead_letters is not None:
            self.dead_letters.add(**record)

    def _acknowledged(self, batch: Batch) -> None:
        if self.ledger is not None:
            self.ledger.record(self.pipeline, self.run_token, batch.events, self.app_id)
        self.pacer.acknowledged(batch.events)
        self.summary.sent += len(batch)
        self.summary.batches += 1
        self.progress()

    def _shared_usage(self, seconds: float) -> int:
        """Events other runs (other days, shards, pipelines) sent into this Heap app recently."""
        assert self.ledger is not None and self.app_id is not None
        since = time.time() - seconds
        return sum(n for _, n in self.ledger.app_usage(self.app_id, since, self.run_token))

    def progress(self, force: bool = False) -> None:
        """At most every PROGRESS_SECONDS (and when ``force``): sent / total, rate, ETA."""
        now = time.monotonic()
        if not force and now - self.last_progress < PROGRESS_SECONDS:
            return
        self.last_progress = now
        summary, elapsed = self.summary, max(now - self.started, 1e-9)
        rate = summary.sent / elapsed
        fraction = getattr(self.source, "progress", lambda: None)()
        known = summary.sent + self.pacer.pending
        if fraction:
            total = max(known, round(known / fraction))
            eta = f"{(total - summary.sent) / rate:.0f} s" if rate else "unknown"
            of = f"of about {total} ({100 * summary.sent / total if total else 100:.0f}%)"
        else:
            of, eta = f"of {known} known so far", "unknown"
        log.info(
            "progress: %d events sent %s, %.0f events/s, ETA %s; %d rows read, %d already sent, "
            "%d waiting for rate limits",
            summary.sent,
            of,
            rate,
            eta,
            summary.read,
            summary.already_sent,
            self.pacer.pending,
        )

    # -- stages -------------------------------------------------------------------------------
    def _send(self, *, wait: bool) -> None:
        """Send what the limits allow now (``wait``: until nothing is pending)."""
        assert self.sender is not None
        while self.pacer.pending:
            events = self.pacer.take(self.options.max_events, wait=wait)
            if not events:
                return
            batches, oversized = self.batcher.pack(events)
            for event in oversized:
                self.summary.invalid["event_too_large"] += 1
                self._dead(
                    origin="",
                    row=None,
                    outcome="invalid",
                    reason="event_too_large",
                    message=f"one event alone is over {self.options.max_bytes} bytes",
                    payload=event,
                )
            for position, batch in enumerate(batches):
                try:
                    delivery = self.sender.deliver(batch)
                except (RetriesExhausted, HeapRefused) as exc:
                    self.summary.unsent = sum(len(b) for b in batches[position:]) + self.pacer.pending
                    raise DeliveryError(
                        f"{exc}. {self.summary.sent} events were acknowledged and recorded; the rest "
                        "will be sent when the day runs again.",
                        self.summary,
                    ) from exc
                self.summary.retries += delivery.retries
                self.summary.throttled += delivery.throttled
                for rejected in delivery.rejected:
                    self.summary.rejected["rejected_by_heap"] += 1
                    self._dead(
                        origin="",
                        row=None,
                        outcome="rejected",
                        reason="rejected_by_heap",
                        message=rejected.message,
                        payload=rejected.event,
                        attempts=rejected.attempts,
                    )

    def _own_rows(self, chunk: Chunk, mapper: Mapper) -> Chunk:
        """This shard's rows of a chunk; the others are another shard's to read and count."""
        shard = self.options.shard
        assert shard is not None
        frame, column = chunk.frame, mapper.bound.roles.get("identity")
        identities = stripped_text(frame[column]) if column in frame.columns else [""] * len(frame)
        mask = shard.mask(identities)
        malformed = chunk.malformed if shard.owns_unsplittable_rows else []
        if mask.all() and len(malformed) == len(chunk.malformed):
            return chunk
        return Chunk(frame=frame[mask], origin=chunk.origin, malformed=malformed)

    def _chunk(self, chunk: Chunk, mapper: Mapper) -> None:
        if self.options.shard is not None:
            chunk = self._own_rows(chunk, mapper)
        summary = self.summary
        summary.read += len(chunk.frame) + len(chunk.malformed)
        for record, problem in chunk.malformed:
            summary.invalid["malformed_row"] += 1
            self._dead(
                origin=chunk.origin, row=record, outcome="invalid", reason="malformed_row", message=problem
            )
        if chunk.frame.empty:
            return
        mapped = mapper.map_chunk(chunk.frame, self.window.start_ms, self.window.end_ms)
        summary.invalid.update(mapped.invalid)
        summary.skipped.update(mapped.skipped)
        summary.truncated_values += mapped.truncated_values
        if self.dead_letters is not None:
            for position, reason, kind in mapped.rejected:
                if kind == "invalid":
                    row, values = _source_row(chunk, position)
                    self._dead(origin=chunk.origin, row=row, outcome="invalid", reason=reason, source=values)
        events = mapped.events
        if not events:
            return
        hashes = key_hashes([e["idempotency_key"] for e in events])
        fresh = self.seen.first_occurrences_of_hashes(hashes)
        if len(self.acked):
            done = np.isin(hashes, self.acked) & fresh
            summary.already_sent += int(done.sum())
            keep = fresh & ~done
        else:
            keep = fresh
        summary.skipped["duplicate_in_source"] += int((~fresh).sum())
        if not keep.all():
            events = [e for e, k in zip(events, keep, strict=True) if k]
        if self.options.dry_run:
            summary.sent += len(events)
            room = self.options.sample_payloads - len(self.samples)
            self.samples.extend(events[: max(0, room)])
            return
        self.pacer.add(events)
        if self.pacer.pending >= self.options.pending_events:
            self._send(wait=self.pacer.pending >= 4 * self.options.pending_events)

    def run(self) -> ReplaySummary:
        options, summary = self.options, self.summary
        origins = self.source.origins()
        summary.origins = len(origins)
        # Bind every origin's columns first: a missing column fails before anything is sent.
        mappers = {o: Mapper(self.spec, bind_columns(self.spec, self.source.headers(o), o)) for o in origins}
        limit = options.row_limit
        for origin in origins:
            for chunk in self.source.chunks(origin):
                if limit is not None:
                    room = limit - summary.read
                    if room <= 0:
                        break
                    if len(chunk.frame) > room:
                        chunk = Chunk(frame=chunk.frame.iloc[:room], origin=chunk.origin, malformed=[])
                self._chunk(chunk, mappers[origin])
            if limit is not None and summary.read >= limit:
                log.info("row limit %d reached: the rest of the window is not read (a trial run)", limit)
                break
        if not options.dry_run:
            self._send(wait=True)
        self.progress(force=True)
        summary.invalid = +summary.invalid
        summary.skipped = +summary.skipped
        summary.seconds = time.monotonic() - self.started
        summary.waited_seconds = self.pacer.waited_seconds
        if summary.unaccounted:
            raise AssertionError(f"counts do not reconcile: {summary.unaccounted} rows unaccounted")
        for event in self.samples:
            log.info("dry run sample payload: %s", orjson.dumps(mask_identity(event)).decode())
        return summary


def replay(
    pipeline: str,
    source: Source,
    spec: MappingSpec,
    window: Window,
    client: HeapClient | None,
    options: ReplayOptions | None = None,
    *,
    ledger: Ledger | None = None,
    dead_letters: DeadLetters | None = None,
) -> ReplaySummary:
    """Replay one window. Raises DeliveryError (Heap did not acknowledge) or TooManyInvalid."""
    options = options or ReplayOptions()
    if client is None and not options.dry_run:
        raise ValueError("a Heap client is needed unless dry_run is set")
    acked = np.empty(0, dtype=np.uint64)
    if ledger is not None and not options.force:  # a dry run reads it too, for honest counts
        acked = ledger.acknowledged(pipeline, window.days())
    # A dry run writes nothing: no ledger rows, no dead letters.
    ledger_for_writes = None if options.dry_run else ledger
    if options.dry_run and dead_letters is not None:
        dead_letters.discard()
        dead_letters = None
    run = _Run(pipeline, source, spec, window, client, options, ledger_for_writes, dead_letters, acked)
    row_id = None
    if ledger_for_writes is not None:
        row_id = ledger_for_writes.start_run(
            pipeline,
            window.label,
            window.start.isoformat(),
            window.end.isoformat(),
            options.run_id,
            run.summary.shard,
        )
    try:
        summary = run.run()
        if run.seen.spilled:
            log.info(
                "%d distinct event keys were checked for repeats on disk (a large window)", len(run.seen)
            )
    except BaseException as exc:
        run.summary.seconds = time.monotonic() - run.started
        if dead_letters is not None:
            dead_letters.discard()
        if ledger_for_writes is not None and row_id is not None:
            ledger_for_writes.finish_run(row_id, "failed", run.summary.as_dict(), None, str(exc))
        raise
    finally:
        run.seen.close()
    location = dead_letters.commit() if dead_letters is not None else None
    summary.dead_letters = location
    bad = summary.total_invalid + summary.total_rejected
    status, message = "success", ""
    if summary.read and bad / summary.read > options.max_invalid_ratio:
        status = "failed"
        message = (
            f"{bad} of {summary.read} rows ({bad / summary.read:.1%}) were invalid or rejected, "
            f"over max_invalid_ratio {options.max_invalid_ratio:.1%}; every valid event was sent. "
            f"Dead letters: {location or 'not kept'}"
        )
    if ledger_for_writes is not None and row_id is not None:
        ledger_for_writes.finish_run(row_id, status, summary.as_dict(), location, message)
    if status == "failed":
        raise TooManyInvalid(message, summary)
    return summary
