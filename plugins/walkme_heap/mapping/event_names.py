"""Event names: a constant, or (item type, event type) through WalkMe's vocabulary table.

Defaults follow WalkMe's UI ("Walk-Thru Started", "ShoutOut Displayed", "Launcher Clicked"); a
pipeline can override single pairs (``"wt.play": "Tour Started"``) or the words for a type. Names
feed the idempotency key, so changing the table changes keys: decide names before the first replay.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from walkme_heap.mapping.presets import EVENT_TYPE_NAMES, ITEM_TYPE_NAMES, PAIR_NAMES
from walkme_heap.mapping.spec import EventNameSpec

MAX_REMEMBERED_PAIRS = 10_000  # distinct (item type, event type) pairs kept named between chunks
MAX_REMEMBERED_CHARS = 256  # longer pairs (free text in a type column) are named each time, not kept


class EventNamer:
    """Each distinct (item type, event type) pair is named once, then looked up."""

    def __init__(self, spec: EventNameSpec) -> None:
        self.spec = spec
        self.items = {**ITEM_TYPE_NAMES, **{k.lower(): v for k, v in spec.item_type_names.items()}}
        self.events = {**EVENT_TYPE_NAMES, **{k.lower(): v for k, v in spec.event_type_names.items()}}
        self.pairs = dict(PAIR_NAMES)
        for pair, name in spec.names.items():
            item, _, event = pair.partition(".")
            self.pairs[(item.strip().lower(), event.strip().lower())] = name
        self._named = _Named(self)

    def name(self, item_type: str, event_type: str) -> str:
        """The name for one pair ("" when neither type is known)."""
        item = item_type.strip() or (self.spec.item_type or "")
        event = event_type.strip() or (self.spec.event_type or "")
        if not item and not event:
            return ""
        pair = self.pairs.get((item.lower(), event.lower()))
        if pair is None:
            words = [self.items.get(item.lower(), item), self.events.get(event.lower(), event)]
            pair = " ".join(w for w in words if w)
        return f"{self.spec.prefix}{pair}".strip()

    def names(self, item_types: pd.Series | None, event_types: pd.Series | None, n: int) -> np.ndarray:
        """Names for a chunk; empty string where no name can be formed. Each distinct pair is named
        once per run (remembered across chunks: up to ``MAX_REMEMBERED_PAIRS`` pairs of at most
        ``MAX_REMEMBERED_CHARS`` characters)."""
        if self.spec.constant is not None:
            return np.full(n, self.spec.constant, dtype=object)
        empty = [""] * n
        items = empty if item_types is None else item_types.fillna("").astype(str).tolist()
        events = empty if event_types is None else event_types.fillna("").astype(str).tolist()
        out = np.empty(n, dtype=object)
        out[:] = list(map(self._named.__getitem__, zip(items, events, strict=True)))
        return out


class _Named(dict[tuple[str, str], str]):
    """Pair -> name, naming a pair the first time it is asked for."""

    def __init__(self, namer: EventNamer) -> None:
        super().__init__()
        self.namer = namer

    def __missing__(self, pair: tuple[str, str]) -> str:
        name = self.namer.name(*pair)
        if len(pair[0]) + len(pair[1]) <= MAX_REMEMBERED_CHARS:  # memory stays a few MB at most
            if len(self) >= MAX_REMEMBERED_PAIRS:  # free text in a type column: start over
                self.clear()
            self[pair] = name
        return name
