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


def test_keys_beyond_the_memory_bound_go_to_disk_and_still_match_a_set(tmp_path) -> None:
    """With at most 300 keys in memory, the rest on disk: the same answers, the file removed."""
    rng = random.Random(11)
    seen, reference = SeenKeys(memory_keys=300, spill_dir=str(tmp_path)), set()
    for _ in range(40):
        chunk = [key_from_event_id(str(rng.randrange(3000))) for _ in range(150)]
        expected = []
        for key in chunk:
            expected.append(key not in reference)
            reference.add(key)
        assert seen.first_occurrences(chunk).tolist() == expected
    assert seen.spilled and len(seen) == len(reference)
    assert len(list(tmp_path.glob("walkme-heap-seen-*.u64"))) == 1
    seen.close()
    assert list(tmp_path.glob("walkme-heap-seen-*.u64")) == []


def test_a_replay_counts_repeats_the_same_with_keys_on_disk(tmp_path) -> None:
    """A window with repeated rows: the same summary whether seen keys stay in memory or not."""
    from tests.test_delivery_faults import DAY, SPEC, write_day
    from walkme_heap.replay import ReplayOptions, replay
    from walkme_heap.sources.csv_files import CsvSource

    path = write_day(tmp_path / "day.csv", 700)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, *lines[1:300]]) + "\n")  # 299 rows again at the end

    def summary(memory_keys: int) -> dict:
        options = ReplayOptions(dry_run=True, dedupe_memory_keys=memory_keys)
        return replay("p", CsvSource(str(path), DAY), SPEC, DAY, None, options).as_dict()

    in_memory, on_disk = summary(10_000_000), summary(100)
    assert in_memory["skipped_by_reason"]["duplicate_in_source"] > 0
    assert {k: v for k, v in on_disk.items() if k != "seconds"} == {
        k: v for k, v in in_memory.items() if k != "seconds"
    }
