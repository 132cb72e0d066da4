"""Repeats within a run are found across chunks, with 8 bytes an event of memory."""

from __future__ import annotations

import random
import stat
from pathlib import Path

import numpy as np

from tests.helpers import DAY, SPEC, first_occurrences, write_day
from walkme_heap.dedupe import NewEventFilter, SeenKeys
from walkme_heap.home import remove_stale_files
from walkme_heap.mapping.keys import key_from_event_id, key_hashes
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sources.csv_files import CsvSource


def test_repeats_within_and_across_chunks() -> None:
    seen = SeenKeys()
    a, b, c = (key_from_event_id(x) for x in "abc")
    assert first_occurrences(seen, [a, b, a]) == [True, True, False]
    assert first_occurrences(seen, [c, b]) == [True, False]
    assert len(seen) == 3


def _answers_like_a_set(seen: SeenKeys, rng: random.Random, chunks: int, size: int, keys: int) -> set[str]:
    """Random chunks of keys: ``seen`` answers each as a plain set of the keys so far would."""
    reference: set[str] = set()
    for _ in range(chunks):
        chunk = [key_from_event_id(str(rng.randrange(keys))) for _ in range(size)]
        expected = []
        for key in chunk:
            expected.append(key not in reference)
            reference.add(key)
        assert first_occurrences(seen, chunk) == expected
    return reference


def test_many_chunks_match_a_plain_set() -> None:
    seen = SeenKeys()
    reference = _answers_like_a_set(seen, random.Random(7), 60, 200, 5000)  # more chunks than runs kept
    assert len(seen) == len(reference)


def test_keys_beyond_the_memory_bound_go_to_disk_and_still_match_a_set(tmp_path) -> None:
    """With at most 300 keys in memory, the rest on disk: the same answers, the file removed."""
    seen = SeenKeys(memory_keys=300, spill_dir=str(tmp_path))
    reference = _answers_like_a_set(seen, random.Random(11), 40, 150, 3000)
    assert seen.spilled and len(seen) == len(reference)
    assert len(list(tmp_path.glob("walkme-heap-seen-*.u64"))) == 1
    seen.close()
    assert list(tmp_path.glob("walkme-heap-seen-*.u64")) == []


def test_a_replay_counts_repeats_the_same_with_keys_on_disk(tmp_path) -> None:
    """A window with repeated rows: the same summary whether seen keys stay in memory or not."""
    path = write_day(tmp_path / "day.csv", 700)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, *lines[1:300]]) + "\n")  # 299 rows again at the end

    def summary(memory_keys: int) -> dict:
        options = ReplayOptions(dry_run=True, dedupe_memory_keys=memory_keys)
        return replay("p", CsvSource(str(path), DAY), SPEC, DAY, None, options).as_dict()

    in_memory, on_disk = summary(10_000_000), summary(100)
    assert in_memory["skipped_by_reason"]["duplicate_in_source"] > 0
    assert in_memory["skipped_by_reason"]["duplicate_in_source"] == 299
    assert {k: v for k, v in on_disk.items() if k != "seconds"} == {
        k: v for k, v in in_memory.items() if k != "seconds"
    }


def test_the_new_event_filter_skips_repeats_and_what_heap_holds() -> None:
    """A chunk's events: a repeat within the chunk, one of an earlier chunk, one Heap acknowledged
    in an earlier run (the ledger's hashes), and new ones, in their order."""
    keys = [key_from_event_id(x) for x in "abcde"]
    events = [{"idempotency_key": k, "n": n} for n, k in enumerate(keys)]
    acknowledged = np.sort(key_hashes([keys[3]]))
    chooser = NewEventFilter(acknowledged)
    first = chooser.select([events[0], events[1], events[0], events[3]])
    assert ([e["n"] for e in first.events], first.repeats, first.already_sent) == ([0, 1], 1, 1)
    second = chooser.select([events[1], events[2], events[4], events[3]])
    assert ([e["n"] for e in second.events], second.repeats, second.already_sent) == ([2, 4], 2, 0)
    chooser.close()


def test_a_live_spill_file_survives_another_runs_cleanup_of_the_folder(tmp_path) -> None:
    """Another run of the pipeline cleaning the working folder between chunks (as sharded replays on
    one host do) leaves this run's file alone, across merges; a file nobody holds is removed."""
    stale = tmp_path / "walkme-heap-seen-left-by-a-killed-run.u64"
    stale.write_bytes(b"\0" * 80)
    seen = SeenKeys(memory_keys=300, spill_dir=str(tmp_path))
    rng = random.Random(5)
    reference: set[str] = set()
    for n in range(30):
        chunk = [key_from_event_id(str(rng.randrange(3000))) for _ in range(150)]
        expected = []
        for key in chunk:
            expected.append(key not in reference)
            reference.add(key)
        assert first_occurrences(seen, chunk) == expected
        assert [Path(p).name for p in remove_stale_files(tmp_path)] == ([stale.name] if n == 0 else [])
    assert seen.spilled and len(seen) == len(reference)
    (spilled,) = tmp_path.glob("walkme-heap-seen-*.u64")
    assert stat.S_IMODE(spilled.stat().st_mode) == 0o600
    seen.close()
    assert list(tmp_path.glob("walkme-heap-seen-*.u64")) == []
