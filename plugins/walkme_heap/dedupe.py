"""Drop repeats within one run: overlapping exports and at-least-once webhooks repeat events.

Heap would ignore a repeated idempotency key anyway, but counting it as "sent" would overstate
delivery. Seen keys are kept as 64-bit hashes (8 bytes an event) in sorted runs, one per chunk,
merged when they pile up: memory grows by exactly 8 bytes an event, with no full-size temporaries
per chunk, so a day of millions of rows stays small.
"""

from __future__ import annotations

import numpy as np

from walkme_heap.mapping.keys import key_hashes

MAX_RUNS = 16  # merge the smaller runs beyond this many (keeps each lookup cheap)


class SeenKeys:
    """The keys of this run's events so far."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []  # sorted, disjoint arrays of hashes

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def _seen(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            positions = np.searchsorted(run, hashes)
            positions[positions == len(run)] = 0
            found |= run[positions] == hashes
        return found

    def first_occurrences(self, keys: list[str]) -> np.ndarray:
        """True where a key was not seen before, in this run or earlier in ``keys``."""
        return self.first_occurrences_of_hashes(key_hashes(keys))

    def first_occurrences_of_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """The same, for keys already hashed with ``key_hashes``."""
        fresh = np.zeros(len(hashes), dtype=bool)
        _, first = np.unique(hashes, return_index=True)
        fresh[first] = True
        if self._runs:
            fresh &= ~self._seen(hashes)
        new = np.sort(hashes[fresh])
        if len(new):
            self._runs.append(new)
        if len(self._runs) > MAX_RUNS:
            self._runs.sort(key=len)
            smallest = self._runs[: MAX_RUNS // 2]
            self._runs = [*self._runs[MAX_RUNS // 2 :], np.sort(np.concatenate(smallest))]
        return fresh
