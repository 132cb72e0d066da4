"""The replay loop, start to end: read -> map -> key -> batch -> send -> summarise.

No Airflow import: the operator adapts this to a task, tests and benchmarks call it directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from walkme_heap.dedupe import SeenKeys
from walkme_heap.delivery.batching import DEFAULT_MAX_BYTES, MAX_EVENTS, Batch, Batcher
from walkme_heap.delivery.client import HeapClient, HeapRequestError
from walkme_heap.mapping.columns import bind_columns
from walkme_heap.mapping.mapper import Mapper
from walkme_heap.mapping.spec import MappingSpec
from walkme_heap.sources.base import Chunk
from walkme_heap.summary import ReplaySummary
from walkme_heap.window import Window

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0


class Source(Protocol):
    """What the loop needs from a source: its origins (files, queries), headers, chunks."""

    def origins(self) -> list[str]: ...
    def headers(self, origin: str) -> list[str]: ...
    def chunks(self, origin: str) -> Iterator[Chunk]: ...


class DeliveryError(RuntimeError):
    """A batch could not be delivered; the summary says how far the run got."""

    def __init__(self, message: str, summary: ReplaySummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class ReplayOptions:
    dry_run: bool = False
    max_events: int = MAX_EVENTS
    max_bytes: int = DEFAULT_MAX_BYTES
    sample_payloads: int = 3


def mask_identity(event: dict[str, Any]) -> dict[str, Any]:
    """A copy safe for logs: identities are personal data."""
    identity = str(event.get("identity", ""))
    return {**event, "identity": f"<{len(identity)} chars>"}


def replay(
    pipeline: str,
    source: Source,
    spec: MappingSpec,
    window: Window,
    client: HeapClient | None,
    options: ReplayOptions | None = None,
) -> ReplaySummary:
    """Replay one window; raise DeliveryError if Heap refuses a batch (nothing is lost silently)."""
    options = options or ReplayOptions()
    if client is None and not options.dry_run:
        raise ValueError("a Heap client is needed unless dry_run is set")
    started = time.monotonic()
    summary = ReplaySummary(pipeline=pipeline, window=window.as_dict(), dry_run=options.dry_run)

    origins = source.origins()
    summary.origins = len(origins)
    # Bind every origin's columns first: a missing column fails before anything is sent.
    mappers = {origin: Mapper(spec, bind_columns(spec, source.headers(origin), origin)) for origin in origins}
    batcher = Batcher(
        app_id=client.app_id if client else "dry-run",
        max_events=options.max_events,
        max_bytes=options.max_bytes,
    )
    samples: list[dict[str, Any]] = []
    seen = SeenKeys()
    progress = _Progress(summary, started)

    def send(batch: Batch) -> None:
        summary.batches += 1
        if options.dry_run:
            summary.sent += len(batch)
            return
        assert client is not None
        try:
            client.post(batch.body)
        except HeapRequestError as exc:
            summary.seconds = time.monotonic() - started
            raise DeliveryError(
                f"Heap refused batch {summary.batches} ({len(batch)} events): {exc}. "
                f"{summary.sent} events were delivered before it; nothing after it was sent. "
                "Fix the cause and re-run the day: events already delivered are ignored by Heap "
                "(same idempotency keys).",
                summary,
            ) from exc
        summary.sent += len(batch)
        progress.maybe_log()

    for origin in origins:
        mapper = mappers[origin]
        for chunk in source.chunks(origin):
            summary.read += len(chunk.frame) + len(chunk.malformed)
            summary.invalid["malformed_row"] += len(chunk.malformed)
            if chunk.frame.empty:
                continue
            mapped = mapper.map_chunk(chunk.frame, window.start_ms, window.end_ms)
            summary.invalid.update(mapped.invalid)
            summary.skipped.update(mapped.skipped)
            summary.truncated_values += mapped.truncated_values
            events = mapped.events
            if events:
                fresh = seen.first_occurrences([e["idempotency_key"] for e in events])
                repeats = len(events) - int(fresh.sum())
                if repeats:
                    summary.skipped["duplicate_in_source"] += repeats
                    events = [e for e, keep in zip(events, fresh, strict=True) if keep]
            if options.dry_run and len(samples) < options.sample_payloads:
                samples.extend(events[: options.sample_payloads - len(samples)])
            for batch in batcher.add(events):
                send(batch)
            summary.invalid["event_too_large"] = batcher.oversized
    last = batcher.flush()
    if last is not None:
        send(last)
    summary.invalid = +summary.invalid  # drop zero counts
    summary.seconds = time.monotonic() - started
    if summary.unaccounted:
        raise AssertionError(f"counts do not reconcile: {summary.unaccounted} rows unaccounted")
    if options.dry_run:
        for event in samples:
            log.info("dry run sample payload: %s", orjson.dumps(mask_identity(event)).decode())
    return summary


class _Progress:
    """Logs sent / read counts and the rate at most every PROGRESS_SECONDS."""

    def __init__(self, summary: ReplaySummary, started: float) -> None:
        self.summary = summary
        self.started = started
        self.last = started

    def maybe_log(self) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        elapsed = now - self.started
        log.info(
            "progress: %d events sent in %d batches, %d rows read, %.0f events/s",
            self.summary.sent,
            self.summary.batches,
            self.summary.read,
            self.summary.sent / elapsed if elapsed else 0.0,
        )
