"""Golden keys: the idempotency scheme must never change silently (it would duplicate history)."""

from __future__ import annotations

import numpy as np

from walkme_heap.mapping.keys import (
    SCHEME,
    key_from_event_id,
    key_from_fields,
    key_hashes,
    keys_from_event_ids,
    keys_from_fields,
)

GOLDEN_FIELDS = [
    (
        ("u-alice", 1710028800000, "WalkMe Walk-Thru Started", "152605", "s-1"),
        "wmh1-5a6769b33b471622e3d23590eaeff4bd",
    ),
    (
        ("日本語ユーザー", 0, "WalkMe Survey Submitted", "", ""),
        "wmh1-85004f82124f40cd73e15879e2e4c702",
    ),
]
GOLDEN_IDS = [("evt-0001", "wmh1-97eaf74e85857e4efeb6f4ad31a6bbdf")]


def test_scheme_is_versioned() -> None:
    assert SCHEME == "wmh1"


def test_golden_keys_from_fields() -> None:
    for fields, expected in GOLDEN_FIELDS:
        assert key_from_fields(*fields) == expected


def test_golden_keys_from_event_ids() -> None:
    for event_id, expected in GOLDEN_IDS:
        assert key_from_event_id(event_id) == expected


def test_keys_are_long_enough_and_distinct_per_field() -> None:
    base = ("u", 1, "e", "i", "s")
    keys = {key_from_fields(*base)}
    for position in range(5):
        changed = list(base)
        changed[position] = 2 if position == 1 else "x"
        keys.add(key_from_fields(*changed))
    assert len(keys) == 6
    assert all(len(k) >= 16 and k.startswith("wmh1-") for k in keys)


def test_fields_cannot_bleed_into_each_other() -> None:
    assert key_from_fields("ab", 1, "c", "", "") != key_from_fields("a", 1, "bc", "", "")


def test_event_id_keys_differ_from_field_keys() -> None:
    assert key_from_event_id("u") != key_from_fields("u", 0, "", "", "")


def test_vector_form_matches_scalar_form() -> None:
    keys, hashes = keys_from_fields(["a", "b"], [1, 2], ["n", "n"], ["", "o"], ["s", ""])
    assert keys == [key_from_fields("a", 1, "n", "", "s"), key_from_fields("b", 2, "n", "o", "")]
    assert hashes.dtype == np.uint64 and hashes.tolist() == key_hashes(keys).tolist()
    ids, id_hashes = keys_from_event_ids(["e-1", "\udcff\x00"])
    assert ids == [key_from_event_id("e-1"), key_from_event_id("\udcff\x00")]
    assert id_hashes.tolist() == key_hashes(ids).tolist()
    assert keys_from_fields([], [], [], [], [])[0] == [] and len(keys_from_event_ids([])[1]) == 0


def test_key_hashes_are_the_digest_prefix() -> None:
    key = key_from_fields("a", 1, "n", "", "")
    assert key_hashes([key])[0] == np.uint64(int(key[5:21], 16))
