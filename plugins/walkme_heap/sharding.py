"""Shards of a day: a stable split of rows by identity, so one worker owns each identity's events.

A row belongs to shard ``crc32(identity) mod count``, where identity is the row's identity text as
the mapping reads it (trimmed; missing = ""). CRC-32 is fixed by its standard, so every worker, every
Python and every retry puts a row in the same shard, and an identity's per-minute limit is paced by
one process. Rows the parser could not split (no identity to read) belong to shard 0.

Sharding never changes which events are sent or their keys: the ledger is per day, not per shard,
so a day replayed with a different number of shards still sends each event once.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np

from walkme_heap.mapping.mapper import stripped_text
from walkme_heap.sources.base import Chunk

MAX_SHARDS = 64


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"shards must be between 1 and {MAX_SHARDS}, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in 0..{self.count - 1}")

    @classmethod
    def of(cls, index: int | None, count: int) -> Shard | None:
        """Shard ``index`` of ``count``; None for an unsharded window (1 shard). Raises ValueError."""
        if count == 1 and index in (None, 0):
            return None
        return cls(index or 0, count)

    @property
    def label(self) -> str:
        """1-based for people and file names: ``shard-2-of-4``."""
        return f"shard-{self.index + 1}-of-{self.count}"

    @property
    def owns_unsplittable_rows(self) -> bool:
        return self.index == 0

    def mask(self, identities: list[str]) -> np.ndarray:
        """Which of these (trimmed) identities belong to this shard."""
        count, crc = self.count, zlib.crc32
        shards = np.fromiter(
            (crc(v.encode("utf-8", "surrogatepass")) % count for v in identities),
            dtype=np.int64,
            count=len(identities),
        )
        return shards == self.index

    def own_rows(self, chunk: Chunk, identity_column: str | None) -> Chunk:
        """This shard's rows of a chunk; the others are another shard's to read and count."""
        frame = chunk.frame
        present = identity_column is not None and identity_column in frame.columns
        identities = stripped_text(frame[identity_column]) if present else [""] * len(frame)
        mask = self.mask(identities)
        malformed = chunk.malformed if self.owns_unsplittable_rows else []
        if mask.all() and len(malformed) == len(chunk.malformed):
            return chunk
        return dataclasses.replace(chunk, frame=frame[mask], malformed=malformed)
