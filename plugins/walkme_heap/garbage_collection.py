"""How a replay asks Python's cyclic garbage collector to run less often.

A replay allocates millions of short-lived containers (an event's dicts live from its chunk to
its batch). With the default thresholds the collector runs thousands of times a day's replay and
each full pass walks every object alive, the imported libraries' included: 12% of a dry run's CPU
was the collector (measured on 1M rows). During a replay, the objects alive when it starts are
frozen (never walked again until it ends; unless something else froze objects already) and a
young collection waits for 50,000 net new containers instead of 700. The collector is one per
process: replays in threads of one process share the tuning, which the last one to end restores.
Memory stays bounded: events are freed by reference counting as their batches go, which no
threshold delays, and a young collection still runs once that many are live.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 50_000  # net new container objects between young collections (Python's default: 700)

_lock = threading.Lock()
_active = 0  # replays inside ``fewer_collections`` now (threads of one process share the collector)
_restore: tuple[tuple[int, ...], bool] | None = None  # the thresholds to restore, and whether we froze


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Within: young collections at ``YOUNG_THRESHOLD``, and the objects alive at the start frozen
    unless something else froze objects already (Airflow freezes around its forks: those stay as
    they are). The first replay in tunes, the last one out restores the thresholds and unfreezes
    only what it froze. A collector switched off or tuned already is left alone."""
    global _active, _restore
    with _lock:
        if _active == 0 and gc.isenabled() and gc.get_threshold()[0] < YOUNG_THRESHOLD:
            freeze = gc.get_freeze_count() == 0
            _restore = (gc.get_threshold(), freeze)
            if freeze:
                gc.freeze()
            gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _restore is not None:
                thresholds, froze = _restore
                _restore = None
                gc.set_threshold(*thresholds)
                if froze:
                    gc.unfreeze()
