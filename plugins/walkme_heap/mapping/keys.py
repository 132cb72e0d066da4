"""The idempotency key scheme. One place, versioned, pinned by golden tests.

Heap ignores a later event with a key it has seen and cannot update or delete events, so a key
must be a pure function of the record and must never change for data already sent: a new scheme
would duplicate every replayed event. Change ``SCHEME`` only with a migration plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

SCHEME = "wmh1"
_SEP = "\x1f"  # unit separator: cannot appear in the canonical text of a field by accident


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def key_from_event_id(event_id: str) -> str:
    """Key for a record that carries its own event id (the mapping's ``event_id`` column)."""
    return f"{SCHEME}-{_digest(_SEP.join((SCHEME, 'id', event_id)))}"


def key_from_fields(identity: str, time_ms: int, event_name: str, item_id: str, session_id: str) -> str:
    """Key from canonical fields when there is no event id: who, when (ms), what, which item, session."""
    canonical = _SEP.join((SCHEME, "f", identity, str(time_ms), event_name, item_id, session_id))
    return f"{SCHEME}-{_digest(canonical)}"


def keys_from_event_ids(event_ids: Iterable[str]) -> tuple[list[str], np.ndarray]:
    """Keys of records that carry their own event id, and their ``key_hashes``."""
    return _keys_and_hashes([_SEP.join((SCHEME, "id", value)) for value in event_ids])


def keys_from_fields(
    identities: Iterable[str],
    times_ms: Iterable[int],
    names: Iterable[str],
    item_ids: Iterable[str],
    session_ids: Iterable[str],
) -> tuple[list[str], np.ndarray]:
    """Keys from canonical fields, and their ``key_hashes``: ``key_from_fields`` for many rows (the
    same text, the same digest; pinned by the golden tests)."""
    head = f"{SCHEME}{_SEP}f{_SEP}"
    return _keys_and_hashes(
        [
            f"{head}{i}\x1f{t}\x1f{n}\x1f{o}\x1f{s}"
            for i, t, n, o, s in zip(identities, times_ms, names, item_ids, session_ids, strict=True)
        ]
    )


def _keys_and_hashes(canonical: list[str]) -> tuple[list[str], np.ndarray]:
    """One sha256 per text (the only per-row step), then the hex text and the 64-bit hashes of all
    of them at once: a key is the scheme and the digest's first 32 hex digits, its hash the
    digest's first 8 bytes (big-endian), which is what ``key_hashes`` reads back from a key."""
    sha256 = hashlib.sha256
    blob = b"".join([sha256(text.encode("utf-8", "surrogatepass")).digest() for text in canonical])
    hexes, prefix = blob.hex(), f"{SCHEME}-"
    keys = [prefix + hexes[start : start + 32] for start in range(0, len(hexes), 64)]
    return keys, np.frombuffer(blob, dtype=">u8")[::4].astype(np.uint64)


def key_hashes(keys: Iterable[str]) -> np.ndarray:
    """64-bit hashes of keys (the first 16 hex digits of the digest), for compact sets of keys."""
    prefix = len(SCHEME) + 1
    return np.fromiter((int(k[prefix : prefix + 16], 16) for k in keys), dtype=np.uint64)
