"""Find the columns a mapping needs in a source's headers, matching them loosely."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from walkme_heap.mapping.presets import PRESET_EXCLUDED_PROPERTIES, PRESETS, ROLES
from walkme_heap.mapping.spec import MappingSpec

_LOOSE = re.compile(r"[\s._\-]+")


class MissingColumnsError(ValueError):
    """The source lacks columns the mapping requires; nothing may be sent."""


def normalise_header(header: str) -> str:
    """``wm.euId``, ``wm_euid`` and ``WM EUID`` -> ``wmeuid``; ``End User ID`` -> ``enduserid``."""
    return _LOOSE.sub("", str(header).lstrip("\ufeff")).lower()


def find_column(headers: list[str], candidates: list[str]) -> str | None:
    """The first header matching a candidate (loosely, globs allowed), candidates in order."""
    normalised = [(normalise_header(h), h) for h in headers]
    for candidate in candidates:
        wanted = normalise_header(candidate)  # globs survive: * ? [ ] are kept
        for norm, original in normalised:
            if fnmatchcase(norm, wanted):
                return original
    return None


@dataclass(frozen=True)
class BoundColumns:
    """The mapping's roles resolved against one source's headers."""

    roles: dict[str, str | None]


def bind_columns(spec: MappingSpec, headers: list[str], origin: str) -> BoundColumns:
    """Resolve roles and property columns; raise MissingColumnsError naming what is missing."""
    preset = PRESETS.get(spec.preset or "", {})
    roles: dict[str, str | None] = {}
    for role in ROLES:
        candidates = spec.columns.get(role, preset.get(role, []))
        roles[role] = find_column(headers, candidates) if candidates else None
    required = ["identity", "timestamp"] + (["event_id"] if spec.columns.get("event_id") else [])
    missing = [role for role in required if roles[role] is None]
    if missing:
        described = ", ".join(
            f"{role} (looked for {' / '.join(spec.columns.get(role, preset.get(role, [])))})"
            for role in missing
        )
        aggregate = [h for h in headers if normalise_header(h).startswith("numberof")]
        hint = (
            f"; its columns ({', '.join(aggregate[:3])}) look like a per-user aggregate report, "
            "which is not an event export and must not be replayed"
            if aggregate
            else ""
        )
        raise MissingColumnsError(f"{origin}: missing required columns: {described}{hint}")

    return BoundColumns(roles=roles)


def property_columns(spec: MappingSpec, headers: list[str], roles: dict[str, str | None]) -> list[str]:
    """Columns sent as properties: all but identity, time and environment, filtered by globs."""
    not_properties = {roles["identity"], roles["timestamp"], roles["environment"]}
    excluded = [*PRESET_EXCLUDED_PROPERTIES.get(spec.preset or "", []), *spec.exclude_properties]
    return [
        h
        for h in headers
        if h not in not_properties
        and str(h).strip()
        and not matches_any(h, excluded)
        and (not spec.include_properties or matches_any(h, spec.include_properties))
    ]


def matches_any(header: str, patterns: tuple[str, ...] | list[str]) -> bool:
    lowered = header.lower()
    norm = normalise_header(header)
    return any(fnmatchcase(lowered, p.lower()) or fnmatchcase(norm, normalise_header(p)) for p in patterns)
