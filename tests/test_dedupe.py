"""Repeats within a run are found across chunks, with 8 bytes an event of memory."""

from __future__ import annotations

import random

from walkme_heap.dedupe import SeenKeys
from walkme_heap.mapping.keys import key_from_event_id


def test_repeats_within_and_across_chunks() -> None:
    seen = SeenKeys()
    a, b, c = (key_from_event_id(x) for x in "abc")
    assert seen.first_occurrences([a, b, a]).tolist() == [True, True, False]
    assert seen.first_occurrences([c, b]).tolist() == [True, False]
    assert len(seen) == 3


def test_many_chunks_match_a_plain_set() -> None:
    rng = random.Random(7)
    seen, reference = SeenKeys(), set()
    for _ in range(60):  # more chunks than runs are kept: exercises merging
        chunk = [key_from_event_id(str(rng.randrange(5000))) for _ in range(200)]
        expected = []
        for key in chunk:
            expected.append(key not in reference)
            reference.add(key)
        assert seen.first_occurrences(chunk).tolist() == expected
    assert len(seen) == len(reference)
