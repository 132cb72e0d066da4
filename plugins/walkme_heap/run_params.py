"""A run's trigger-form params besides its window (``start`` / ``end``: see ``window``): ``dry_run``,
``force`` and ``limit``, read the same way whether they come from the form, ``--conf`` or a template.
"""

from __future__ import annotations

from typing import Any


class ParamError(ValueError):
    """A param's value cannot be used; the message names the param."""


def truthy(value: Any) -> bool:
    """A flag: booleans as they are; text ``1``, ``true``, ``yes``, ``on`` (any case) is on."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def row_limit(value: Any) -> int | None:
    """A trial run's ``limit``: a whole number of rows, at least 1; empty means none."""
    if value in (None, ""):
        return None
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise ParamError(f"param 'limit' must be a whole number of rows, got {value!r}") from None
    if limit < 1:
        raise ParamError(f"param 'limit' must be at least 1, got {limit}")
    return limit
