"""The emulator's two validation paths: the fast path (an accelerator for plain bulk bodies) never
accepts what the full rules refuse, and the full rules accept and refuse what the contract says."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import GOOD_EVENT as GOOD
from walkme_heap.emulator.validation import HeapValidationError, check_body, fast_accepts, validate_body

# (change to a good event, whether the contract accepts it)
EDGES: list[tuple[dict[str, Any], bool]] = [
    ({"timestamp": "2024-13-10T00:00:00Z"}, False),
    ({"timestamp": "0000-03-10T00:00:00Z"}, False),
    ({"timestamp": "2024-03-10T24:00:00Z"}, False),
    ({"timestamp": "2024-03-10T00:00:60.5+0100"}, True),
    ({"timestamp": "2024-03-10T00:00:00Z\n"}, False),
    ({"timestamp": None}, False),
    ({"idempotency_key": None}, False),
    ({"idempotency_key": "12345678"}, True),
    ({"idempotency_key": "1234567"}, False),
    ({"session_id": 5}, False),
    ({"session_id": "s"}, True),
    ({"properties": {"k" * 1023: 1}}, True),
    ({"properties": {"k" * 1024: 1}}, False),
    ({"properties": {"a": "x" * 1023, "b": -3, "c": 0.25}}, True),
    ({"properties": {"a": "x" * 1024}}, False),
    ({"properties": {"a": None}}, False),
    ({"properties": {"a": [1]}}, False),
    ({"properties": {"a": True}}, False),
    ({"properties": {"a": float("inf")}}, False),
    ({"properties": {}}, False),
    ({"event": "x" * 1024}, True),
    ({"event": "x" * 1025}, False),
    ({"event": ""}, False),
    ({"identity": "x" * 255}, True),
    ({"identity": "x" * 256}, False),
    ({"identity": ""}, False),
    ({"user_id": "12", "identity": None}, True),
    ({"user_id": "12"}, False),
    ({"app_id": "inner"}, False),
]


def _body(change: dict[str, Any]) -> dict[str, Any]:
    event = {k: v for k, v in {**GOOD, **change}.items() if not (k == "identity" and v is None)}
    return {"app_id": "a", "events": [GOOD, event]}


@pytest.mark.parametrize(("change", "accepted"), EDGES, ids=range(len(EDGES)))
def test_each_edge_gets_the_contracts_verdict_on_both_paths(change: dict, accepted: bool) -> None:
    body = _body(change)
    if accepted:
        assert check_body(body) == ("a", body["events"])
        assert validate_body(body) == ("a", body["events"])
    else:
        assert not fast_accepts(body)
        with pytest.raises(HeapValidationError, match=r"^postBody\.events\[1\]"):
            check_body(body)
        with pytest.raises(HeapValidationError, match=r"^postBody\.events\[1\]"):
            validate_body(body)


def test_the_fast_path_takes_plain_bulk_bodies() -> None:
    """Not a path that never runs: the bodies the project sends are the fast path's."""
    assert fast_accepts({"app_id": "a", "events": [GOOD, {**GOOD, "properties": {"n": 2}}]})
    assert not fast_accepts({"app_id": "a", "event": "E", "identity": "u"})  # single form: full rules


text = st.text(max_size=4)
long_text = st.text(min_size=1022, max_size=1026)
values = (
    text
    | long_text
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.booleans()
    | st.none()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(text, text, max_size=1)
)
timestamps = (
    st.just(GOOD["timestamp"])
    | st.from_regex(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:?\d{2})\n?", fullmatch=True)
    | text
    | st.none()
    | st.integers()
)
events = st.fixed_dictionaries(
    {},
    optional={
        "event": st.just("E") | text | long_text | st.integers(),
        "identity": st.just("u1") | text | st.text(min_size=254, max_size=256) | st.none() | st.integers(),
        "user_id": st.just("12") | text,
        "timestamp": timestamps,
        "properties": st.dictionaries(text | long_text, values, max_size=3) | st.none() | text,
        "idempotency_key": st.just(GOOD["idempotency_key"]) | st.text(min_size=6, max_size=10) | st.none(),
        "session_id": text | st.integers() | st.none(),
        "app_id": text,
    },
)
bodies = st.fixed_dictionaries(
    {"app_id": st.just("a") | text | st.none(), "events": st.lists(events, max_size=3)},
    optional={"extra": st.integers()},
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
@example({"app_id": "a", "events": [GOOD]})
@example({"app_id": "a", "events": [GOOD, {**GOOD, "session_id": "s", "properties": {"k": -1}}]})
def test_what_the_fast_path_accepts_the_full_rules_accept(body: dict[str, Any]) -> None:
    if fast_accepts(body):
        assert check_body(body) == (body["app_id"], body["events"])
