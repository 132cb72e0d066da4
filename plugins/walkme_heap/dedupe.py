"""Which of a chunk's events are new: not seen earlier in this run, not acknowledged by Heap before.

Overlapping exports and at-least-once webhooks repeat events within a run; Heap would ignore a
repeated idempotency key anyway, but counting it as "sent" would overstate delivery, so repeats are
skipped (``duplicate_in_source``). Events the ledger says Heap already acknowledged are counted
``already sent``. ``NewEventFilter`` does both for each chunk.

Seen keys are kept as 64-bit hashes (8 bytes an event) in sorted runs, one per chunk,
merged when they pile up. Past ``memory_keys`` keys (500,000 by default: 4 MB) they are merged into one
sorted file on disk, which each later chunk's candidates are checked against in slices of 2 MB, so
a day of any size replays in flat memory. Only such large days pay for it: one sequential read of
the file per chunk (from the page cache). The file is deleted at ``close``. The hashes are derived
from the events, identities among them: the file is made by ``home.work_file`` in the run's working
folder (0600, locked while in use, so the next run removes it if this one is killed). Each merge
writes a new file and deletes the old one: renaming it over the old name would let a cleanup that
had opened the old file (then unlocked) remove the new one by that name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from walkme_heap.home import release_work_file, work_file
from walkme_heap.mapping.keys import key_hashes

MAX_RUNS = 16  # merge the smaller runs beyond this many (keeps each lookup cheap)
DEFAULT_MEMORY_KEYS = 500_000  # keys kept in memory (8 bytes each: 4 MB) before they go to disk
SLICE_KEYS = 1 << 18  # keys read from disk at a time (2 MB, into one reused buffer)


class _SortedFile:
    """Sorted, distinct 64-bit hashes in a temporary file, only ever read in slices."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = directory
        self._lock, self.path = work_file(directory, "seen", ".u64")  # held until removed
        self.count = 0
        # One buffer for every read: fresh multi-megabyte arrays per slice would come from the heap
        # once glibc's adaptive mmap threshold has grown, and fragment it.
        self._buffer = np.empty(SLICE_KEYS, dtype=np.uint64)

    def _slices(self) -> Iterator[np.ndarray]:
        """The file's hashes, a slice at a time; each slice is valid until the next one is read."""
        with open(self.path, "rb") as handle:  # buffered: readinto fills the slice or reaches the end
            while True:
                size = handle.readinto(memoryview(self._buffer).cast("B"))
                if not size:
                    return
                yield self._buffer[: size // 8]

    def contains(self, candidates: np.ndarray) -> np.ndarray:
        """Which of these sorted, distinct hashes are in the file."""
        found = np.zeros(len(candidates), dtype=bool)
        for part in self._slices():
            lo = int(np.searchsorted(candidates, part[0], "left"))
            hi = int(np.searchsorted(candidates, part[-1], "right"))
            if lo < hi:
                inside = candidates[lo:hi]
                found[lo:hi] = part[np.searchsorted(part, inside)] == inside
        return found

    def merge(self, new: np.ndarray) -> None:
        """Add sorted hashes that are not in the file: a streaming merge into a new file."""
        handle, merged = work_file(self.directory, "seen", ".u64")
        try:
            taken = 0
            with os.fdopen(os.dup(handle), "wb") as out:
                for part in self._slices():
                    upto = int(np.searchsorted(new, part[-1], "right"))
                    np.sort(np.concatenate((part, new[taken:upto]))).tofile(out)
                    taken = upto
                new[taken:].tofile(out)
        except BaseException:
            release_work_file(handle, merged)
            raise
        self.remove()
        self._lock, self.path = handle, merged
        self.count += len(new)

    def remove(self) -> None:
        if self._lock >= 0:
            lock, self._lock = self._lock, -1
            release_work_file(lock, self.path)


class SeenKeys:
    """The keys of this run's events so far; past ``memory_keys`` in a file in ``spill_dir`` (the
    run's working folder; None: the system temp folder, which nothing cleans)."""

    def __init__(self, memory_keys: int = DEFAULT_MEMORY_KEYS, spill_dir: str | Path | None = None) -> None:
        self._runs: list[np.ndarray] = []  # sorted, disjoint arrays of hashes
        self.memory_keys = memory_keys
        self.spill_dir = spill_dir
        self._disk: _SortedFile | None = None

    def __len__(self) -> int:
        return (self._disk.count if self._disk else 0) + sum(len(run) for run in self._runs)

    @property
    def spilled(self) -> bool:
        return self._disk is not None

    def close(self) -> None:
        """Delete the file on disk, if keys went there."""
        if self._disk is not None:
            self._disk.remove()
            self._disk = None

    def _seen(self, ordered: np.ndarray) -> np.ndarray:
        """Which of these sorted hashes a run in memory holds (sorted needles: each lookup lands
        near the last one, in cache)."""
        found = np.zeros(len(ordered), dtype=bool)
        for run in self._runs:
            positions = np.searchsorted(run, ordered)
            positions[positions == len(run)] = 0
            found |= run[positions] == ordered
        return found

    def first_occurrences(self, hashes: np.ndarray) -> np.ndarray:
        """True where a key (hashed with ``key_hashes``) was not seen before, in this run or earlier
        in ``hashes``; remembers them all."""
        # One stable sort: equal hashes end up together, the earliest first.
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        first = np.ones(len(ordered), dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        if self._runs:
            first &= ~self._seen(ordered)
        if self._disk is not None and first.any():
            first[np.flatnonzero(first)[self._disk.contains(ordered[first])]] = False
        fresh = np.zeros(len(hashes), dtype=bool)
        fresh[order[first]] = True
        new = ordered[first]  # sorted already
        if len(new):
            self._runs.append(new)
        if sum(len(run) for run in self._runs) > self.memory_keys:
            if self._disk is None:
                self._disk = _SortedFile(self.spill_dir)
            pending = np.concatenate(self._runs)
            self._runs = []
            pending.sort()  # in place: no second copy
            self._disk.merge(pending)
            return fresh
        if len(self._runs) > MAX_RUNS:
            self._runs.sort(key=len)
            smallest = self._runs[: MAX_RUNS // 2]
            self._runs = [*self._runs[MAX_RUNS // 2 :], np.sort(np.concatenate(smallest))]
        return fresh


@dataclass
class NewEvents:
    """A chunk's events that are new, and how many were not."""

    events: list[dict[str, Any]]
    repeats: int  # seen earlier in this run (or this chunk)
    already_sent: int  # acknowledged by Heap in an earlier run (the ledger)


class NewEventFilter:
    """Keeps the events of each chunk that are new.

    :param acknowledged: sorted hashes of the keys the ledger holds for the window (empty to send
        everything again).
    :param spill_dir: the run's working folder, for the seen keys past ``memory_keys``.
    """

    def __init__(
        self,
        acknowledged: np.ndarray,
        memory_keys: int = DEFAULT_MEMORY_KEYS,
        spill_dir: str | Path | None = None,
    ) -> None:
        if len(acknowledged) > 1 and not (acknowledged[1:] >= acknowledged[:-1]).all():
            acknowledged = np.sort(acknowledged)  # looked up by bisection
        self.acknowledged = acknowledged
        self.seen = SeenKeys(memory_keys, spill_dir)

    def select(self, events: list[dict[str, Any]], hashes: np.ndarray | None = None) -> NewEvents:
        """``hashes``: the events' ``key_hashes`` when the mapping made them (else made here)."""
        if hashes is None or len(hashes) != len(events):
            hashes = key_hashes([e["idempotency_key"] for e in events])
        fresh = self.seen.first_occurrences(hashes)
        already_sent = 0
        keep = fresh
        if len(self.acknowledged):
            done = _isin_sorted(hashes, self.acknowledged) & fresh
            already_sent = int(done.sum())
            keep = fresh & ~done
        if not keep.all():
            events = [e for e, k in zip(events, keep, strict=True) if k]
        return NewEvents(events, repeats=int((~fresh).sum()), already_sent=already_sent)

    def close(self) -> None:
        self.seen.close()


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin`` against a sorted array, without sorting it again for every chunk."""
    positions = np.searchsorted(sorted_set, values)
    positions[positions == len(sorted_set)] = 0
    return sorted_set[positions] == values
