"""Events built from columns are the dicts the per-row reference builds, key order included."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from walkme_heap.mapping.mapper import build_events


def reference(identities, names, stamps, keys, prop_keys, columns) -> list[dict[str, Any]]:
    """The per-row form the replay used before (``dict(zip())``, None values dropped)."""
    events = []
    for row, (who, what, when, key) in enumerate(zip(identities, names, stamps, keys, strict=True)):
        properties = {k: c[row] for k, c in zip(prop_keys, columns, strict=True) if c[row] is not None}
        event = {"identity": who, "event": what, "timestamp": when, "idempotency_key": key}
        if properties:
            event["properties"] = properties
        events.append(event)
    return events


values = st.one_of(st.none(), st.text(max_size=3), st.integers(-(2**53), 2**53), st.floats(allow_nan=False))


@given(
    st.integers(min_value=0, max_value=6).flatmap(
        lambda rows: st.tuples(
            st.just(rows),
            # few distinct names: the same Heap key twice (two headers that differ past 1023 chars)
            st.lists(st.sampled_from(["a", "b", "c", "ü"]), max_size=5),
        )
    ),
    st.data(),
)
def test_the_same_events_as_the_per_row_reference(shape: tuple[int, list[str]], data: st.DataObject) -> None:
    rows, prop_keys = shape
    columns = [data.draw(st.lists(values, min_size=rows, max_size=rows)) for _ in prop_keys]
    fields = [[f"{name}{n}" for n in range(rows)] for name in ("id", "ev", "t", "k")]
    built = build_events(*fields, prop_keys, columns)
    expected = reference(*fields, prop_keys, columns)
    assert built == expected
    assert [orjson.dumps(e) for e in built] == [orjson.dumps(e) for e in expected]  # the same bytes


def test_many_properties_and_no_properties() -> None:
    prop_keys = [f"p{i}" for i in range(3000)]
    columns = [["x", None] for _ in prop_keys]
    events = build_events(["a", "b"], ["e", "e"], ["t", "t"], ["k1", "k2"], prop_keys, columns)
    assert len(events[0]["properties"]) == 3000 and "properties" not in events[1]
    assert build_events(["a"], ["e"], ["t"], ["k"], [], []) == [
        {"identity": "a", "event": "e", "timestamp": "t", "idempotency_key": "k"}
    ]


def test_sparse_columns_make_dicts_no_larger_than_their_values_need() -> None:
    """JSON sources whose keys vary by row: 40 columns, one value a row. Each row's dict holds one
    property and is the size of a dict made with one (a dict keeps the size it was built with)."""
    prop_keys = [f"p{i}" for i in range(40)]
    columns = [["x" if row == i % 20 else None for row in range(20)] for i in range(40)]
    fields = [[f"{name}{n}" for n in range(20)] for name in ("id", "ev", "t", "k")]
    events = build_events(*fields, prop_keys, columns)
    assert events == reference(*fields, prop_keys, columns)
    assert all(sys.getsizeof(e["properties"]) == sys.getsizeof({"p0": "x"}) for e in events)
    # dense but for a few: those few rows' dicts are made again, the size their values need
    columns = [["x"] * 20 for _ in range(8)]
    columns[0][3] = columns[1][3] = columns[2][3] = None
    events = build_events(*fields, prop_keys[:8], columns)
    assert events == reference(*fields, prop_keys[:8], columns)
    assert sys.getsizeof(events[3]["properties"]) == sys.getsizeof(dict.fromkeys(prop_keys[3:8], "x"))
