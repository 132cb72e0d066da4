"""User attributes in the rows (WalkMe user variables, a report's user columns): which columns they
are, their names in Heap, and each identity's latest value of each by event time.

Heap keeps user properties on the profile (``add_user_properties``), not on events: one value per
user and property, overwritten by the next. So a run keeps, per identity, the value of each
attribute from its latest event (by event time; between rows of the same millisecond, the one read
last), across every chunk and file of its window. A blank value is no value (the known one stays)
unless ``empty_erases``; then the latest blank is sent as ``""``.

Names: ``wm.userVars.plan`` is ``plan`` in Heap, any other column keeps its header, a pipeline's
``names`` rename either. Heap refuses any casing of ``id`` as a user property and names of 1024
characters or more; two columns may not share a name. A column that would break these is an error
(``UserPropertyNameError``: before anything is sent for the headers a source knows up front), never a
property quietly dropped. Columns the pipeline excludes from event properties (``properties.exclude``,
the preset's exclusions) are never user properties either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from walkme_heap.heap_api import MAX_PROPERTY_CHARS, RESERVED_USER_PROPERTY
from walkme_heap.mapping.columns import MissingColumnsError, matches_any, normalise_header
from walkme_heap.mapping.presets import PRESET_EXCLUDED_PROPERTIES, PRESET_USER_COLUMNS, ROLES
from walkme_heap.mapping.properties import replace_escaped
from walkme_heap.mapping.spec import MappingSpec, UserPropertiesSpec

# ``wm.userVars.<name>`` (any spelling normalise_header folds together) -> ``<name>``
_USER_VARS = re.compile(r"^wm[\s._\-]*uservars[\s._\-]+", re.IGNORECASE)


class UserPropertyNameError(MissingColumnsError):
    """A user attribute column has a name Heap refuses, or shares its name with another."""


def reserved_name(name: str) -> bool:
    """Heap reserves any casing of ``id`` as a user property name."""
    return name.strip().lower() == RESERVED_USER_PROPERTY


def name_problem(name: str) -> str:
    """Why Heap would refuse ``name`` as a user property name ("" when it would not)."""
    if not name.strip():
        return "is empty"
    if reserved_name(name):
        return "is reserved by Heap (any casing of 'id')"
    if len(name) > MAX_PROPERTY_CHARS:
        return f"has more than {MAX_PROPERTY_CHARS} characters"
    return ""


def default_name(column: str) -> str:
    """The Heap name of a column no rename names: ``wm.userVars.plan`` -> ``plan``."""
    return _USER_VARS.sub("", column, count=1) if _USER_VARS.match(column) else column


def user_patterns(spec: MappingSpec) -> tuple[str, ...]:
    """The globs of the user attribute columns: the pipeline's, else its preset's."""
    users = spec.user_properties
    if users is None:
        return ()
    return users.columns or tuple(PRESET_USER_COLUMNS.get(spec.preset or "", ()))


def user_columns(spec: MappingSpec, headers: list[str], roles: dict[str, str | None]) -> dict[str, str]:
    """Header -> Heap name of each user attribute among ``headers`` (in header order); raises
    ``UserPropertyNameError`` for a name Heap refuses or two columns of one name."""
    users = spec.user_properties
    if users is None:
        return {}
    patterns = user_patterns(spec)
    taken = {c for role in ROLES if (c := roles.get(role))}  # a role's column is never one
    # what a pipeline keeps out of Heap as event properties stays out of its profiles too
    excluded = [*PRESET_EXCLUDED_PROPERTIES.get(spec.preset or "", []), *spec.exclude_properties]
    renames = {normalise_header(k): v for k, v in users.names}
    columns: dict[str, str] = {}
    named: dict[str, str] = {}
    for header in headers:
        if header in taken or not str(header).strip() or not matches_any(header, patterns):
            continue
        if matches_any(header, excluded):
            continue
        # a header's bytes that are not UTF-8 (kept as lone surrogates) become U+FFFD, as in event keys
        name = replace_escaped(renames.get(normalise_header(header), default_name(header)))
        problem = name_problem(name)
        if problem:
            raise UserPropertyNameError(
                f"user attribute column {header!r}: its Heap name {name!r} {problem}; give it another "
                f"name under user_properties.names (e.g. {header!r}: 'walkme_{name.strip() or 'value'}')"
            )
        if name in named:
            raise UserPropertyNameError(
                f"user attribute columns {named[name]!r} and {header!r} would both be Heap's {name!r}; "
                "rename one under user_properties.names"
            )
        named[name] = header
        columns[header] = name
    return columns


class UserValues:
    """One chunk's user attribute values for its event rows: identity, event time (epoch ms),
    and per Heap name the cleaned values (None: blank)."""

    def __init__(self, identities: list[str], times: np.ndarray, values: dict[str, list[Any]]) -> None:
        self.identities, self.times, self.values = identities, times, values


class LatestUserValues:
    """Per identity, the latest value of each attribute by event time, over a whole run.

    Memory holds one entry per identity and attribute seen in the window (not per row).
    """

    def __init__(self, spec: UserPropertiesSpec) -> None:
        self.empty_erases = spec.empty_erases
        # identity -> name -> (event ms, order read, value)
        self._latest: dict[str, dict[str, tuple[int, int, Any]]] = {}
        self._read = 0  # rows offered so far: the tie-break between rows of one millisecond

    def __len__(self) -> int:
        return len(self._latest)

    def add(self, chunk: UserValues) -> None:
        """Keep each identity's latest value per attribute of the chunk's rows."""
        n = len(chunk.identities)
        base, self._read = self._read, self._read + n
        if not n or not chunk.values:
            return
        codes, uniques = pd.factorize(np.asarray(chunk.identities, dtype=object))
        times = np.asarray(chunk.times, dtype=np.int64)
        for name, values in chunk.values.items():
            if self.empty_erases:
                present = np.arange(n)
            else:
                present = np.flatnonzero(np.fromiter((v is not None for v in values), dtype=bool, count=n))
            if not len(present):
                continue
            ordered = present[np.lexsort((present, times[present]))]  # by time, then as read
            newest_first = ordered[::-1]
            _, first = np.unique(codes[newest_first], return_index=True)
            for row in newest_first[first].tolist():
                value = values[row]
                self._keep(
                    uniques[codes[row]], name, int(times[row]), base + row, "" if value is None else value
                )

    def _keep(self, identity: str, name: str, ms: int, order: int, value: Any) -> None:
        properties = self._latest.setdefault(identity, {})
        known = properties.get(name)
        if known is None or (ms, order) > known[:2]:
            properties[name] = (ms, order, value)

    def users(self) -> Iterator[tuple[str, dict[str, tuple[Any, int]]]]:
        """(identity, {name: (value, event ms)}) for each identity, in the order first seen."""
        for identity, properties in self._latest.items():
            yield identity, {name: (value, ms) for name, (ms, _, value) in properties.items()}
