"""Where batches are built: at most 1000 events and at most ``max_bytes`` of JSON per request.

Each event is encoded once (orjson); a request body is the encoded events joined inside the bulk
envelope, so the byte cap is exact, not estimated. A batch keeps its events and their encodings so
that it can be split in halves (bisection) without encoding anything again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

MAX_EVENTS = 1000  # Heap's documented cap per bulk request
DEFAULT_MAX_BYTES = 1_000_000  # Heap documents no cap: stay well below any plausible one


@dataclass
class Batch:
    """One request's events, their encodings, and the envelope they go in."""

    head: bytes
    events: list[dict[str, Any]]
    parts: list[bytes]

    def __len__(self) -> int:
        return len(self.events)

    @property
    def body(self) -> bytes:
        return self.head + b",".join(self.parts) + b"]}"

    @property
    def keys(self) -> list[str]:
        return [event["idempotency_key"] for event in self.events]

    def halves(self) -> tuple[Batch, Batch]:
        middle = len(self.events) // 2
        return (
            Batch(self.head, self.events[:middle], self.parts[:middle]),
            Batch(self.head, self.events[middle:], self.parts[middle:]),
        )


class Batcher:
    """Packs events into requests within the count and byte caps."""

    def __init__(self, app_id: str, max_events: int = MAX_EVENTS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not 1 <= max_events <= MAX_EVENTS:
            raise ValueError(f"max_events must be between 1 and {MAX_EVENTS}")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.head = b'{"app_id":' + orjson.dumps(app_id) + b',"events":['
        self.envelope = len(self.head) + 2  # "]}"
        if max_bytes < self.envelope + 256:
            raise ValueError("max_bytes is too small for a single event")

    def pack(self, events: Iterable[dict[str, Any]]) -> tuple[list[Batch], list[dict[str, Any]]]:
        """(batches, events too large for any request on their own)."""
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
