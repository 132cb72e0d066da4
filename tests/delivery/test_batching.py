"""Batches: at most 1000 events, at most max_bytes, exact JSON bodies, oversized events refused."""

from __future__ import annotations

import json

import orjson
import pytest

from walkme_heap.delivery.batching import Batch, Batcher
from walkme_heap.emulator.validation import validate_body


def keys(batch: Batch) -> list[str]:
    return [e["idempotency_key"] for e in batch.events]


def event(i: int, size: int = 10) -> dict:
    return {
        "identity": f"u{i}",
        "event": "E",
        "timestamp": "2024-03-10T00:00:00.000+00:00",
        "idempotency_key": f"wmh1-{i:032x}",
        "properties": {"p": "x" * size},
    }


def test_count_cap_and_exact_bodies() -> None:
    batches, oversized = Batcher(app_id="app").pack(event(i) for i in range(2500))
    assert oversized == []
    assert [len(b) for b in batches] == [1000, 1000, 500]
    for batch in batches:
        app_id, events = validate_body(json.loads(batch.body))
        assert app_id == "app" and [e["idempotency_key"] for e in events] == keys(batch)


def test_byte_cap_is_exact() -> None:
    batches, _ = Batcher(app_id="app", max_bytes=5000).pack(event(i, size=300) for i in range(100))
    assert all(len(b.body) <= 5000 for b in batches)
    one_more = len(orjson.dumps(event(99, size=300))) + 1  # the event and its comma
    assert all(len(b.body) + one_more > 5000 for b in batches[:-1])  # each could not take one more
    assert sum(len(b) for b in batches) == 100


def test_oversized_events_are_returned_not_sent() -> None:
    batches, oversized = Batcher(app_id="app", max_bytes=2000).pack([event(0), event(1, size=5000), event(2)])
    assert oversized == [event(1, size=5000)]
    assert [keys(b) for b in batches] == [[event(0)["idempotency_key"], event(2)["idempotency_key"]]]


def test_halves_keep_bodies_valid() -> None:
    (batch,), _ = Batcher(app_id="app").pack(event(i) for i in range(5))
    left, right = batch.halves()
    assert (len(left), len(right)) == (2, 3)
    assert (
        json.loads(left.body)["events"] + json.loads(right.body)["events"] == json.loads(batch.body)["events"]
    )


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="max_events must be between 1 and 1000"):
        Batcher(app_id="a", max_events=1001)
    with pytest.raises(ValueError, match="max_bytes is too small for a single event"):
        Batcher(app_id="a", max_bytes=10)


def test_one_array_and_one_by_one_give_the_same_bytes() -> None:
    """The fast path (one orjson call per run) and the exact greedy packing agree byte for byte."""
    events = [event(i, size=i % 50) for i in range(700)]
    batcher = Batcher(app_id="app")
    (fast,), _ = batcher.pack(events)
    (slow,), _ = batcher._pack_one_by_one(events)
    assert fast.array is not None and slow.array is None
    assert fast.body == slow.body
    body_size = len(fast.body)
    (at_cap,), _ = Batcher(app_id="app", max_bytes=body_size).pack(events)  # exactly at the cap: one
    assert at_cap.array is not None
    split, _ = Batcher(app_id="app", max_bytes=body_size - 1).pack(events)  # one byte less: two
    assert [len(b) for b in split] == [699, 1] and all(len(b.body) <= body_size - 1 for b in split)
