"""Drop repeats within one run: overlapping exports and at-least-once webhooks repeat events.

Heap would ignore a repeated idempotency key anyway, but counting it as "sent" would overstate
delivery. Seen keys are kept as a sorted array of 64-bit hashes (8 bytes an event), not a set of
strings, so a day of millions of rows stays small.
"""

from __future__ import annotations

import numpy as np

from walkme_heap.mapping.keys import key_hashes


class SeenKeys:
    """The keys of this run's events so far."""

    def __init__(self) -> None:
        self._seen = np.empty(0, dtype=np.uint64)

    def first_occurrences(self, keys: list[str]) -> np.ndarray:
        """Boolean mask: True where a key was not seen before (in this run or earlier in ``keys``)."""
        hashes = key_hashes(keys)
        fresh = np.zeros(len(hashes), dtype=bool)
        _, first = np.unique(hashes, return_index=True)
        fresh[first] = True
        fresh &= ~np.isin(hashes, self._seen, assume_unique=False)
        self._seen = np.union1d(self._seen, hashes[fresh])
        return fresh
