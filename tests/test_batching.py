"""Batches: at most 1000 events, at most max_bytes, exact JSON bodies, oversized events refused."""

from __future__ import annotations

import json

import orjson
import pytest

from walkme_heap.delivery.batching import Batcher
from walkme_heap.emulator.validation import validate_body


def event(i: int, size: int = 10) -> dict:
    return {
        "identity": f"u{i}",
        "event": "E",
        "timestamp": "2024-03-10T00:00:00.000+00:00",
        "idempotency_key": f"wmh1-{i:032x}",
        "properties": {"p": "x" * size},
    }


def test_count_cap_and_exact_bodies() -> None:
    batcher = Batcher(app_id="app")
    full = list(batcher.add(event(i) for i in range(2500)))
    rest = batcher.flush()
    assert batcher.oversized == 0 and rest is not None
    batches = [*full, rest]
    assert [len(b) for b in batches] == [1000, 1000, 500]
    for batch in batches:
        body = json.loads(batch.body)
        app_id, events = validate_body(body)
        assert app_id == "app" and [e["idempotency_key"] for e in events] == batch.keys
    assert batcher.flush() is None


def test_byte_cap_is_exact() -> None:
    batcher = Batcher(app_id="app", max_bytes=5000)
    full = list(batcher.add(event(i, size=300) for i in range(100)))
    last = batcher.flush()
    assert all(len(b.body) <= 5000 for b in [*full, last])
    one_more = len(orjson.dumps(event(99, size=300))) + 1  # the event and its comma
    assert all(len(b.body) + one_more > 5000 for b in full)  # each full batch could not take one more
    assert sum(len(b) for b in [*full, last]) == 100


def test_oversized_events_are_reported_not_sent() -> None:
    batcher = Batcher(app_id="app", max_bytes=2000)
    assert list(batcher.add([event(0), event(1, size=5000), event(2)])) == []
    assert batcher.oversized == 1
    assert batcher.flush().keys == [event(0)["idempotency_key"], event(2)["idempotency_key"]]


def test_batches_come_out_as_soon_as_they_are_full() -> None:
    batcher = Batcher(app_id="app", max_events=2)
    produced = batcher.add(event(i) for i in range(5))
    assert len(next(produced)) == 2  # before the remaining events are even encoded
    assert [len(b) for b in produced] == [2]
    assert len(batcher.flush()) == 1


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        Batcher(app_id="a", max_events=1001)
    with pytest.raises(ValueError):
        Batcher(app_id="a", max_bytes=10)
