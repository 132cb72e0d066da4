"""What a pipeline says about turning its rows into Heap events (built by ``config``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EventNameSpec:
    """A constant name, or one derived from (item type, event type) through a table."""

    constant: str | None = None
    prefix: str = "WalkMe "
    item_type: str | None = None  # used where the data has no item type
    event_type: str | None = None  # used where the data has no event type
    names: dict[str, str] = field(default_factory=dict)  # "wt.play" -> name (overrides)
    item_type_names: dict[str, str] = field(default_factory=dict)  # "wt" -> "Walk-Thru"
    event_type_names: dict[str, str] = field(default_factory=dict)  # "play" -> "Played"


@dataclass(frozen=True)
class UserPropertiesSpec:
    """Which columns are user attributes, sent to Heap's ``add_user_properties`` (not per event).

    ``columns``: globs over headers (empty: the preset's user columns); ``names``: column (as
    written in ``columns`` or the header) -> its name in Heap, pairs sorted (hashable);
    ``keep_on_events``: the columns stay event properties too; ``empty_erases``: an empty latest
    value is sent as ``""`` instead of leaving the known value in Heap.
    """

    columns: tuple[str, ...] = ()
    names: tuple[tuple[str, str], ...] = ()
    keep_on_events: bool = False
    empty_erases: bool = False


@dataclass(frozen=True)
class MappingSpec:
    """Columns by role, naming, property selection and row filters for one pipeline."""

    preset: str | None = "webhook"
    columns: dict[str, list[str]] = field(default_factory=dict)  # role -> candidates (overrides)
    event_name: EventNameSpec = field(default_factory=EventNameSpec)
    include_properties: tuple[str, ...] = ()  # globs; empty means every remaining column
    exclude_properties: tuple[str, ...] = ()
    include_non_production: bool = False
    user_properties: UserPropertiesSpec | None = None  # None: user attributes are not synced
