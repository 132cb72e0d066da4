"""A replay runs with the cyclic collector tuned down, and leaves it as it found it."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DAY, SPEC, write_day
from walkme_heap.garbage_collection import YOUNG_THRESHOLD, fewer_collections
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sources.base import Chunk
from walkme_heap.sources.csv_files import CsvSource


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_settings_inside_and_restored_after_even_on_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections():
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD and gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > 0
        with fewer_collections():  # nested: the outer settings stay
            pass
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD and gc.get_freeze_count() > 0
        raise RuntimeError
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_objects_frozen_before_stay_frozen_after() -> None:
    """Airflow freezes objects around its forks: a replay neither adds to them nor thaws them."""
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with fewer_collections():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_replays_in_threads_share_the_tuning_until_the_last_one_ends() -> None:
    before = gc.get_threshold()
    first_in, first_out, second_done = threading.Event(), threading.Event(), threading.Event()
    seen: list[int] = []

    def first() -> None:
        with fewer_collections():
            first_in.set()
            first_out.wait(10)

    def second() -> None:
        first_in.wait(10)
        with fewer_collections():
            first_out.set()
            time.sleep(0.05)  # the first replay ends meanwhile
            seen.append(gc.get_threshold()[0])
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert second_done.is_set() and seen == [YOUNG_THRESHOLD]
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_cyclic_garbage_is_still_collected_within() -> None:
    """Memory stays bounded: cycles dropped inside are freed without an explicit collect."""
    alive = weakref.WeakSet()
    with fewer_collections():
        for _ in range(10 * YOUNG_THRESHOLD):
            alive.add(Node())
        assert len(alive) < 2 * YOUNG_THRESHOLD


def test_a_replay_reads_with_the_collector_tuned_and_restores_it(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []

    class Recording(CsvSource):
        def chunks(self, url: str) -> Iterator[Chunk]:
            for chunk in super().chunks(url):
                seen.append((gc.get_threshold()[0], gc.get_freeze_count()))
                yield chunk

    before = gc.get_threshold()
    path = write_day(tmp_path / "day.csv", 50, invalid=0)
    summary = replay("p", Recording(str(path), DAY), SPEC, DAY, None, ReplayOptions(dry_run=True))
    assert summary.sent == 50
    assert seen and all(threshold == YOUNG_THRESHOLD and frozen > 0 for threshold, frozen in seen)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
