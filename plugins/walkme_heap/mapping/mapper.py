"""Chunk -> Heap events, plus every row that will not be sent with its reason.

Rules are applied in this order, first match wins, so each row gets exactly one outcome:

1. ``unparsable_time`` (invalid): the time is missing or cannot be read;
2. ``outside_window`` (skipped): the event belongs to another run's window;
3. ``non_production`` (skipped): ``wm.env`` is not 0, unless the pipeline includes such rows;
4. ``missing_identity`` / ``identity_not_text`` / ``identity_too_long`` (invalid): never merge people
   into one profile (an identity holding bytes that are not UTF-8, NUL or other control characters
   is not text: cleaning it could make it equal to another person's);
5. ``missing_event_id`` (invalid): the mapping names an event-id column and the row has none;
6. ``no_event_name`` / ``event_name_too_long`` (invalid);
7. ``later_than_lateness`` (skipped, dead-lettered): with a lateness bound, a valid event older than
   the window opened by the bound: it arrived later than the pipeline allows (a manual run over its
   day sends it). Checked last, so an invalid row stays invalid whatever its time.
"""

from __future__ import annotations

import functools
import operator
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from walkme_heap.heap_api import MAX_EVENT_NAME_CHARS, MAX_IDENTITY_CHARS
from walkme_heap.mapping.columns import BoundColumns, property_columns
from walkme_heap.mapping.event_names import EventNamer
from walkme_heap.mapping.keys import keys_from_event_ids, keys_from_fields
from walkme_heap.mapping.properties import PropertyCleaner, property_key, replace_escaped
from walkme_heap.mapping.spec import MappingSpec
from walkme_heap.mapping.timestamps import INVALID_MS, format_ms, to_epoch_ms
from walkme_heap.mapping.user_properties import UserValues, user_columns

# Identities that would merge unrelated people into one Heap profile, irreversibly.
PLACEHOLDER_IDENTITIES = frozenset(
    {"", "null", "undefined", "none", "nan", "nil", "user", "[object object]", "n/a"}
)

LATE = "later_than_lateness"
DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)
SKIP_REASONS = ("outside_window", "non_production", LATE)
# C0 and C1 controls (NUL, tab, the unit separator of keys ...), DEL, and lone surrogates (bytes that
# were not UTF-8). Checked only where str.isprintable() says no, which is rare and cheap to ask.
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def replace_escaped_bytes(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns with undecodable bytes (lone surrogates) replaced by U+FFFD."""
    frame = frame.copy()
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column):
            frame[name] = column.map(replace_escaped, na_action="ignore")
    return frame


@dataclass
class MappedChunk:
    """One chunk's outcome. ``rejected`` holds (row position in the chunk, reason, outcome)."""

    events: list[dict[str, Any]]
    rows: np.ndarray  # chunk positions of the rows that became ``events``
    hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))  # key_hashes(events)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)
    invalid: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    truncated_values: int = 0
    # Events counted ``later_than_lateness``, per UTC event day (the report's per-day view)
    too_late_days: Counter[str] = field(default_factory=Counter)
    # The user attribute values of the rows that became ``events`` (None: the pipeline syncs none)
    users: UserValues | None = None
    truncated_user_values: int = 0


def stripped_text(series: pd.Series) -> list[str]:
    """Canonical text of each value without surrounding blanks; missing (None, NaN) -> ""."""
    if _is_text(series) and not series.hasnans:  # a CSV's column, none missing: one pass in C
        return list(map(str.strip, series.tolist()))
    return [
        v.strip() if type(v) is str else "" if _missing(v) else str(v).strip() for v in text_column(series)
    ]


def _is_text(series: pd.Series) -> bool:
    """A column of the string dtype (text already, as a CSV's), not Python objects of any kind."""
    return pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (type(value) is float and value != value)


def text_column(series: pd.Series) -> pd.Series:
    """Canonical text of ids: ints without ``.0``, strings as they are, missing stays missing."""
    if pd.api.types.is_float_dtype(series):
        present = series.notna()
        out = pd.Series([None] * len(series), index=series.index, dtype=object)
        out[present] = [_canonical_text(float(v)) for v in series[present].to_numpy()]
        return out
    if pd.api.types.is_unsigned_integer_dtype(series):  # beyond int64: one by one, exactly
        return pd.Series([str(v) for v in series.tolist()], index=series.index, dtype=object)
    if pd.api.types.is_integer_dtype(series):
        return series.astype("Int64").astype("string").astype(object).where(series.notna(), None)
    if pd.api.types.is_bool_dtype(series):
        return series.map({True: "true", False: "false"}).astype(object)
    if _is_text(series):
        return series.astype(object).where(series.notna(), None)  # text already (CSV): as it is
    return series.map(_canonical_text, na_action="ignore").astype(object)


def _canonical_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        # str(int()) stops at 4,300 digits
        return str(int(value)) if value.adjusted() < 4000 else format(value.to_integral_value(), "f")
    return value if isinstance(value, str) else str(value)


MAX_GENERATED = 256  # properties a generated builder takes; wider chunks are built row by row


def build_events(
    identities: list[str],
    names: list[str],
    stamps: list[str],
    keys: list[str],
    prop_keys: list[str],
    prop_columns: list[list[Any]],
) -> list[dict[str, Any]]:
    """The events of a chunk from its columns: the per-row work of a replay.

    Rows whose values are all there (the common case): one comprehension with a dict display per
    row (``_event_builder``); the rows that hold a dropped value (None) are then made again without
    it (a dict keeps the size it was built with: emptying it in place would keep it large). Where
    those are half the rows or more, or there are more than ``MAX_GENERATED`` properties (JSON
    sources whose keys vary by row), every row is made row by row instead. Either way each dict
    holds only its values, a later column's value wins where two share a Heap key (as in
    ``dict(zip())``), and a row with no property left has no "properties" key."""
    count, n = len(prop_keys), len(identities)
    if not count:
        return _event_builder(0)((), identities, names, stamps, keys, ())
    holes = [column for column in prop_columns if None in column]  # a scan in C each
    if count > MAX_GENERATED or any(2 * column.count(None) >= n for column in holes):
        return _events_row_by_row(identities, names, stamps, keys, prop_keys, prop_columns)
    remade: np.ndarray = np.zeros(n, dtype=bool)
    for column in holes:
        remade |= np.fromiter(map(operator.is_, column, repeat(None)), dtype=bool, count=n)
    rows = np.flatnonzero(remade).tolist()
    if 2 * len(rows) >= n:
        return _events_row_by_row(identities, names, stamps, keys, prop_keys, prop_columns)
    events = _event_builder(count)(prop_keys, identities, names, stamps, keys, prop_columns)

    def picked(values: list[Any]) -> list[Any]:
        return [values[row] for row in rows]

    again = _events_row_by_row(
        *map(picked, (identities, names, stamps, keys)), prop_keys, list(map(picked, prop_columns))
    )
    for row, event in zip(rows, again, strict=True):  # those rows made again, row by row
        events[row] = event
    return events


def _events_row_by_row(
    identities: list[str],
    names: list[str],
    stamps: list[str],
    keys: list[str],
    prop_keys: list[str],
    prop_columns: list[list[Any]],
) -> list[dict[str, Any]]:
    """``build_events`` for sparse or very wide columns: each row's dict holds only its values."""
    events = []
    rows = zip(identities, names, stamps, keys, zip(*prop_columns, strict=True), strict=True)
    for who, what, when, key, values in rows:
        event = {"identity": who, "event": what, "timestamp": when, "idempotency_key": key}
        properties = {k: v for k, v in zip(prop_keys, values, strict=True) if v is not None}
        if properties:
            event["properties"] = properties
        events.append(event)
    return events


@functools.lru_cache(maxsize=64)
def _event_builder(count: int) -> Callable[..., list[dict[str, Any]]]:
    """A function that builds events with ``count`` properties from columns, as a comprehension
    with a dict display (2-3x faster than ``dict(zip())`` per row). Generated from the count alone:
    the property names are its arguments, never part of its code."""
    values = [f"v{i}" for i in range(count)]
    names = [f"k{i}" for i in range(count)]
    properties = f', "properties": {{{", ".join(f"{k}: {v}" for k, v in zip(names, values, strict=True))}}}'
    code = (
        "def build(prop_keys, identities, names, stamps, keys, columns):\n"
        + (f"    {', '.join(names)}, = prop_keys\n" if count else "")
        + '    return [{"identity": i, "event": e, "timestamp": t, "idempotency_key": x'
        + (properties if count else "")
        + f"}} for i, e, t, x{''.join(', ' + v for v in values)} in zip(identities, names, stamps, keys"
        + (", *columns" if count else "")
        + ", strict=True)]\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(code, f"<events with {count} properties>", "exec"), namespace)
    return namespace["build"]


class Mapper:
    """Maps chunks from one source whose columns were bound with ``bind_columns``."""

    def __init__(self, spec: MappingSpec, bound: BoundColumns) -> None:
        self.spec = spec
        self.bound = bound
        self.namer = EventNamer(spec.event_name)
        self._property_cache: dict[tuple[str, ...], tuple[list[str], dict[str, str]]] = {}

    def _role(self, frame: pd.DataFrame, role: str) -> pd.Series | None:
        """The role's column; all-missing when a chunk lacks it (JSON keys vary row to row)."""
        column = self.bound.roles.get(role)
        if column is None:
            return None
        if column not in frame.columns:
            return pd.Series([None] * len(frame), index=frame.index, dtype=object)
        return frame[column]

    def _properties(self, columns: list[str]) -> tuple[list[str], dict[str, str]]:
        """Event property columns and user attribute columns (header -> Heap name) for a chunk's
        columns (cached: most chunks share the bound headers). User attributes leave the events
        unless the pipeline keeps them there."""
        key = tuple(columns)
        if key not in self._property_cache:
            users = user_columns(self.spec, columns, self.bound.roles)
            properties = property_columns(self.spec, columns, self.bound.roles)
            user_spec = self.spec.user_properties
            if users and user_spec is not None and not user_spec.keep_on_events:
                properties = [c for c in properties if c not in users]
            self._property_cache[key] = (properties, users)
        return self._property_cache[key]

    def check_user_columns(self, headers: list[str]) -> None:
        """Raise ``UserPropertyNameError`` now, before anything is sent, for a user attribute
        column of these headers whose Heap name Heap refuses."""
        self._properties([str(h) for h in headers])

    def map_chunk(
        self,
        frame: pd.DataFrame,
        start_ms: int,
        end_ms: int,
        *,
        escaped: bool = False,
        before_window: str = "outside_window",
    ) -> MappedChunk:
        """Map one chunk; events in ``[start_ms, end_ms)`` are sent. ``escaped``: its text may hold
        undecodable bytes as lone surrogates; the identity is judged as read, every other value
        gets U+FFFD for them (as a replacing decoder would have given: the same keys as before such
        bytes were kept). ``before_window``: the reason of rows older than ``start_ms``."""
        n = len(frame)
        frame = frame.reset_index(drop=True)
        outcome = np.full(n, "", dtype=object)  # "" = still a candidate
        candidate = np.ones(n, dtype=bool)  # outcome == "", kept as a mask (no string comparisons)
        identity = stripped_text(self._role(frame, "identity"))
        if escaped:
            frame = replace_escaped_bytes(frame)

        def mark(mask: np.ndarray, reason: str) -> None:
            hit = candidate & mask
            outcome[hit] = reason
            candidate[hit] = False

        times = to_epoch_ms(self._role(frame, "timestamp"))
        mark(times == INVALID_MS, "unparsable_time")
        if before_window != LATE:
            mark(times < start_ms, before_window)
        mark(times >= end_ms, "outside_window")

        environment = self._role(frame, "environment")
        if environment is not None and not self.spec.include_non_production:
            production = ("", "0")
            env_text = stripped_text(environment)
            in_production = np.fromiter(map(production.__contains__, env_text), dtype=bool, count=n)
            mark(~in_production, "non_production")

        # Each check one pass in C (map over str methods); the regex only where isprintable says no.
        placeholder = PLACEHOLDER_IDENTITIES.__contains__
        mark(np.fromiter(map(placeholder, map(str.lower, identity)), dtype=bool, count=n), "missing_identity")
        not_text = ~np.fromiter(map(str.isprintable, identity), dtype=bool, count=n)
        for position in np.flatnonzero(not_text).tolist():
            not_text[position] = _NOT_TEXT.search(identity[position]) is not None
        mark(not_text, "identity_not_text")
        identity_lengths = np.fromiter(map(len, identity), dtype=np.int64, count=n)
        mark(identity_lengths > MAX_IDENTITY_CHARS, "identity_too_long")

        event_ids = self._role(frame, "event_id")
        if event_ids is not None:
            event_id_text = stripped_text(event_ids)
            mark(np.fromiter((not v for v in event_id_text), dtype=bool, count=n), "missing_event_id")

        names = self.namer.names(
            None if (c := self._role(frame, "item_type")) is None else text_column(c),
            None if (c := self._role(frame, "event_type")) is None else text_column(c),
            n,
        )
        name_lengths = np.fromiter((len(x) for x in names), dtype="int64", count=n)
        mark(name_lengths == 0, "no_event_name")
        mark(name_lengths > MAX_EVENT_NAME_CHARS, "event_name_too_long")
        if before_window == LATE:  # only an event that would have been sent is late (checked last)
            mark(times < start_ms, LATE)

        result = MappedChunk(events=[], rows=np.flatnonzero(candidate))
        too_late = outcome == LATE
        if too_late.any():
            days, counts = np.unique(times[too_late] // DAY_MS, return_counts=True)
            for day, count in zip(days.tolist(), counts.tolist(), strict=True):
                result.too_late_days[(EPOCH + timedelta(days=day)).isoformat()] += count
        for position in np.flatnonzero(~candidate):
            reason = outcome[position]
            kind = "skipped" if reason in SKIP_REASONS else "invalid"
            result.rejected.append((int(position), reason, kind))
            (result.skipped if kind == "skipped" else result.invalid)[reason] += 1

        rows = result.rows
        if len(rows) == 0:
            return result
        good = frame if len(rows) == n else frame.iloc[rows].reset_index(drop=True)  # most chunks: all
        good_identity = [identity[r] for r in rows.tolist()]
        good_times = times[rows]
        good_names = names[rows]
        if event_ids is not None:
            keys, result.hashes = keys_from_event_ids([event_id_text[r] for r in rows.tolist()])
        else:
            keys, result.hashes = keys_from_fields(
                good_identity,
                good_times.tolist(),
                good_names,
                self._optional_text(good, "item_id"),
                self._optional_text(good, "session_id"),
            )
        cleaner = PropertyCleaner()
        property_names, users = self._properties([str(c) for c in frame.columns])
        if self.spec.user_properties is not None:
            user_cleaner = PropertyCleaner()
            result.users = UserValues(
                good_identity, good_times, {name: user_cleaner.column(good[c]) for c, name in users.items()}
            )
            result.truncated_user_values = user_cleaner.truncated
        prop_keys = [property_key(c) for c in property_names]
        prop_columns = [cleaner.column(good[c]) for c in property_names]
        stamps = format_ms(good_times).tolist()
        result.events = build_events(
            good_identity, good_names.tolist(), stamps, keys, prop_keys, prop_columns
        )
        result.truncated_values = cleaner.truncated
        return result

    def _optional_text(self, frame: pd.DataFrame, role: str) -> list[str]:
        series = self._role(frame, role)
        if series is None:
            return [""] * len(frame)
        return stripped_text(series)
