"""Property-based: any row becomes an event Heap's validator accepts, or a counted reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import hypothesis
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walkme_heap.emulator.validation import validate_body
from walkme_heap.mapping.columns import bind_columns
from walkme_heap.mapping.mapper import Mapper
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec

WINDOW = (0, 253_402_300_799_999)  # every representable time: exercise all rows

text = (
    st.text(max_size=40)
    | st.text(min_size=1000, max_size=1100)
    | st.sampled_from(
        [
            "",
            " ",
            "null",
            "undefined",
            "0",
            "1",
            "1710028800000",
            "1710028800",
            "2024-03-10 01:00:00",
            "2024-03-10T01:00:00+05:30",
            "{{created_at}}",
            "x" * 256,
            "wt",
            "play",
            "NaN",
            "1e400",
        ]
    )
)
typed = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.datetimes(
        timezones=st.none() | st.just(UTC), min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)
    )
)
columns = ["wm.euId", "created_at", "type", "oType", "oId", "sId", "wm.env"]
# Mostly-usable identities and times, so that most rows reach the property and naming rules.
identities = st.text(min_size=1, max_size=60) | st.text(min_size=250, max_size=260) | text
times = (
    st.integers(0, 253_402_300_799_999).map(str)
    | st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.isoformat()
    )
    | text
)
extra_names = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() and s not in columns)


CONTROL = {  # a row that must become an event, whatever rows surround it
    "wm.euId": "control-user",
    "created_at": "1710028800000",
    "type": "play",
    "oType": "wt",
    "oId": "1",
    "sId": "s",
    "wm.env": "0",
}


def _map(rows: list[dict[str, Any]], spec: MappingSpec) -> list[dict[str, Any]]:
    frame = pd.DataFrame(rows)
    mapper = Mapper(spec, bind_columns(spec, [str(c) for c in frame.columns], "hypothesis"))
    result = mapper.map_chunk(frame, *WINDOW)
    assert len(result.events) + len(result.rejected) == len(rows)
    assert sum(result.invalid.values()) + sum(result.skipped.values()) == len(result.rejected)
    for event in result.events:
        validate_body({"app_id": "app", "events": [event]})
    hypothesis.event(f"events: {min(len(result.events), 1)}")
    for reason in {**result.invalid, **result.skipped}:
        hypothesis.event(reason)
    return result.events


def check(rows: list[dict[str, Any]], spec: MappingSpec, control_is_event: bool = True) -> None:
    """Every row is an event Heap accepts or a counted reason; and a known-good row among them is
    still an event (a mapper that rejected every row would not pass)."""
    _map(rows, spec)
    events = _map([*rows, CONTROL], spec)
    assert any(e["identity"] == "control-user" for e in events) == control_is_event


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries(
            {**{c: text for c in columns}, "wm.euId": identities, "created_at": times, "wm.env": st.just("0")}
        ),
        min_size=1,
        max_size=8,
    ),
    st.dictionaries(extra_names, text, max_size=3),
)
def test_text_rows_become_valid_events_or_reasons(rows: list[dict[str, str]], extra: dict) -> None:
    check([{**row, **extra} for row in rows], MappingSpec())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries(
            {**{c: typed | text for c in columns}, "wm.euId": typed | identities, "created_at": typed | times}
        ),
        min_size=1,
        max_size=8,
    )
)
def test_typed_rows_become_valid_events_or_reasons(rows: list[dict[str, Any]]) -> None:
    check(rows, MappingSpec(include_non_production=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries({**{c: text for c in columns}, "wm.euId": identities, "created_at": times}),
        min_size=1,
        max_size=5,
    ),
    st.text(max_size=300),
)
def test_any_configured_name_is_valid_or_a_reason(rows: list[dict[str, str]], prefix: str) -> None:
    name = f"{prefix}Walk-Thru Started".strip()
    check(rows, MappingSpec(event_name=EventNameSpec(prefix=prefix)), control_is_event=len(name) <= 255)
