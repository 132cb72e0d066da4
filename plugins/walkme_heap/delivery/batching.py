"""Where batches are built: at most 1000 events and at most ``max_bytes`` of JSON per request.
(The same packing builds ``add_user_properties`` requests: ``field="users"``, 1000 users.)

A run of up to 1000 events is encoded in one call (orjson, a JSON array): when it fits the byte cap,
that array is the request's events, exactly as measured. Otherwise the events are encoded one by
one and packed greedily, so the byte cap is exact, not estimated. A batch keeps its events so that
it can be split in halves (bisection) without mapping anything again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from walkme_heap.heap_api import DEFAULT_MAX_BATCH_BYTES, MAX_EVENTS_PER_REQUEST


@dataclass
class Batch:
    """One request's events and their encoding: one JSON array, or one part per event."""

    head: bytes
    events: list[dict[str, Any]]
    parts: list[bytes] | None = None
    array: bytes | None = None

    def __len__(self) -> int:
        return len(self.events)

    @property
    def body(self) -> bytes:
        if self.array is not None:  # head ends with "[", the array brings its own brackets
            return self.head[:-1] + self.array + b"}"
        assert self.parts is not None
        return self.head + b",".join(self.parts) + b"]}"

    def _parts(self) -> list[bytes]:
        return self.parts if self.parts is not None else [orjson.dumps(e) for e in self.events]

    def halves(self) -> tuple[Batch, Batch]:
        parts = self._parts()
        middle = len(self.events) // 2
        return (
            Batch(self.head, self.events[:middle], parts[:middle]),
            Batch(self.head, self.events[middle:], parts[middle:]),
        )

    def isolate(self, index: int) -> tuple[Batch, Batch]:
        """The event at ``index`` alone, and the others (an event Heap's answer names)."""
        parts, events = self._parts(), self.events
        rest = Batch(self.head, events[:index] + events[index + 1 :], parts[:index] + parts[index + 1 :])
        return Batch(self.head, [events[index]], [parts[index]]), rest


class Batcher:
    """Packs events into requests within the count and byte caps."""

    def __init__(
        self,
        app_id: str,
        max_events: int = MAX_EVENTS_PER_REQUEST,
        max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        *,
        field: str = "events",
    ) -> None:
        if not 1 <= max_events <= MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"max_events must be between 1 and {MAX_EVENTS_PER_REQUEST}")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.head = b'{"app_id":' + orjson.dumps(app_id) + b',"' + field.encode() + b'":['
        self.envelope = len(self.head) + 2  # "]}"
        if max_bytes < self.envelope + 256:
            raise ValueError("max_bytes is too small for a single event")

    def pack(self, events: Iterable[dict[str, Any]]) -> tuple[list[Batch], list[dict[str, Any]]]:
        """(batches, events too large for any request on their own)."""
        pending = events if isinstance(events, list) else list(events)
        batches: list[Batch] = []
        oversized: list[dict[str, Any]] = []
        for start in range(0, len(pending), self.max_events):
            run = pending[start : start + self.max_events]
            array = orjson.dumps(run)
            if self.envelope + len(array) - 2 <= self.max_bytes:  # the array's brackets are in envelope
                batches.append(Batch(self.head, run, array=array))
            else:
                packed, too_large = self._pack_one_by_one(run)
                batches.extend(packed)
                oversized.extend(too_large)
        return batches, oversized

    def _pack_one_by_one(self, events: list[dict[str, Any]]) -> tuple[list[Batch], list[dict[str, Any]]]:
        """Greedy packing of separately encoded events (a run whose one array is over the cap)."""
        batches: list[Batch] = []
        oversized: list[dict[str, Any]] = []
        current: list[dict[str, Any]] = []
        parts: list[bytes] = []
        size = 0
        for event in events:
            encoded = orjson.dumps(event)
            if self.envelope + len(encoded) > self.max_bytes:
                oversized.append(event)
                continue
            extra = len(encoded) + (1 if parts else 0)
            if parts and (len(parts) >= self.max_events or self.envelope + size + extra > self.max_bytes):
                batches.append(Batch(self.head, current, parts))
                current, parts, size, extra = [], [], 0, len(encoded)
            current.append(event)
            parts.append(encoded)
            size += extra
        if parts:
            batches.append(Batch(self.head, current, parts))
        return batches, oversized
