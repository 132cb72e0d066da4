"""Where batches are built: at most 1000 events and at most ``max_bytes`` of JSON per request.

Each event is encoded once (orjson); a request body is the encoded events joined inside the bulk
envelope, so the byte cap is exact, not estimated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_EVENTS = 1000  # Heap's documented cap per bulk request
DEFAULT_MAX_BYTES = 1_000_000  # Heap documents no cap: stay well below any plausible one


@dataclass
class Batch:
    """One request: its body and the idempotency keys it carries (in order)."""

    body: bytes
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class Batcher:
    """Accumulates encoded events and hands out full batches; ``flush`` returns the rest."""

    app_id: str
    max_events: int = MAX_EVENTS
    max_bytes: int = DEFAULT_MAX_BYTES
    _parts: list[bytes] = field(default_factory=list)
    _keys: list[str] = field(default_factory=list)
    _size: int = 0
    oversized: int = 0  # events refused because one alone exceeds max_bytes

    def __post_init__(self) -> None:
        if not 1 <= self.max_events <= MAX_EVENTS:
            raise ValueError(f"max_events must be between 1 and {MAX_EVENTS}")
        self._head = b'{"app_id":' + orjson.dumps(self.app_id) + b',"events":['
        self._envelope = len(self._head) + 2  # "]}"
        if self.max_bytes < self._envelope + 256:
            raise ValueError("max_bytes is too small for a single event")

    def _batch(self) -> Batch:
        body = self._head + b",".join(self._parts) + b"]}"
        batch = Batch(body=body, keys=self._keys)
        self._parts, self._keys, self._size = [], [], 0
        return batch

    def add(self, events: Iterable[dict[str, Any]]) -> Iterator[Batch]:
        """Add events, yielding each batch as soon as it is full (one body in memory at a time).

        An event too large for any request on its own is counted in ``oversized``, not sent.
        """
        for event in events:
            encoded = orjson.dumps(event)
            if self._envelope + len(encoded) > self.max_bytes:
                self.oversized += 1
                continue
            extra = len(encoded) + (1 if self._parts else 0)
            if self._parts and (
                len(self._parts) >= self.max_events or self._envelope + self._size + extra > self.max_bytes
            ):
                yield self._batch()
                extra = len(encoded)
            self._parts.append(encoded)
            self._keys.append(event["idempotency_key"])
            self._size += extra

    def flush(self) -> Batch | None:
        return self._batch() if self._parts else None
