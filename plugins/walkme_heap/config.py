"""pipelines.yaml -> typed pipeline objects. Every error names the pipeline and the bad key.

The file lives at ``include/pipelines.yaml`` unless ``WALKME_HEAP_CONFIG`` names another. Relative
source paths are resolved against the directory that holds the configuration file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from walkme_heap.heap_api import MAX_EVENT_NAME_CHARS
from walkme_heap.mapping.columns import matches_any
from walkme_heap.mapping.presets import PRESET_USER_COLUMNS, PRESETS, ROLES
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec, UserPropertiesSpec
from walkme_heap.mapping.user_properties import default_name, name_problem
from walkme_heap.sharding import MAX_SHARDS
from walkme_heap.sources.base import DEFAULT_CHUNK_ROWS
from walkme_heap.sources.factory import SOURCE_TYPES
from walkme_heap.sources.files import DEFAULT_MAX_RECORD_BYTES, has_glob
from walkme_heap.sources.spec import SourceSpec, located
from walkme_heap.sources.sql import TIME_TYPES

WINDOW_ON = ("event_time", "load_time")
MAX_LATENESS_DAYS = 92  # the longest window a manual run may ask for (it replays what was too late)
DEFAULT_LATENESS_SECONDS = 2 * 86_400  # WalkMe's exports: webhooks filed by arrival, reports hours late

CONFIG_ENV = "WALKME_HEAP_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "include" / "pipelines.yaml"
DEFAULT_HEAP_CONN_ID = "heap_default"  # HeapHook.default_conn_name
DEFAULT_LEDGER_CONN_ID = "walkme_heap_ledger"  # the SQL connection of the ledger, when defined
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class ConfigError(ValueError):
    """The pipeline configuration is invalid; raised at DAG parse time."""


@dataclass(frozen=True)
class Pipeline:
    """One configured replay; becomes the DAG ``walkme_to_heap_<name>``."""

    name: str
    source: SourceSpec
    mapping: MappingSpec
    start_date: datetime
    schedule: str = "@daily"
    end_date: datetime | None = None
    heap_conn_id: str = DEFAULT_HEAP_CONN_ID
    description: str = ""
    catchup: bool = True
    max_active_runs: int = 1
    retries: int = 2
    retry_delay_seconds: int = 120
    shards: int = 1  # split each window into this many shards by identity (mapped tasks)
    tags: tuple[str, ...] = field(default_factory=tuple)
    ledger_conn_id: str = DEFAULT_LEDGER_CONN_ID
    pool: str = ""  # Airflow pool shared by every replay into the same Heap app (1 slot)
    dead_letters: str | None = None  # location (path or URL); default under $AIRFLOW_HOME
    dead_letters_conn_id: str | None = None
    max_invalid_ratio: float = 0.1
    lateness_seconds: int = DEFAULT_LATENESS_SECONDS  # how late events may arrive (late data)

    @property
    def dag_id(self) -> str:
        return f"walkme_to_heap_{self.name}"

    @property
    def heap_pool(self) -> str:
        """The pool of this pipeline's Heap app: runs into one app share its rate budget."""
        return self.pool or f"heap_{self.heap_conn_id}"


class _Section:
    """A mapping being read: knows its path for messages and reports unknown keys."""

    def __init__(self, data: Any, where: str, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: key '{path}' must be a mapping, got {type(data).__name__}")
        self.data, self.where, self.path = data, where, path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: key '{self.key(name)}' {problem}")

    def get(
        self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False
    ) -> Any:
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            if required:
                raise self.fail(name, "is required")
            return default
        value = self.data[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
            names = "/".join(k.__name__ for k in _kinds(kind))
            raise self.fail(name, f"must be {names}, got {type(value).__name__}: {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def section(self, name: str) -> _Section:
        self.used.add(name)
        return _Section(self.data.get(name) or {}, self.where, self.key(name))

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name, (list, str), [])
        items = [value] if isinstance(value, str) else value
        if not all(isinstance(item, str) for item in items):
            raise self.fail(name, "must be a list of strings")
        return tuple(items)

    def string_map(self, name: str) -> dict[str, str]:
        value = self.get(name, dict, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise self.fail(name, "must map strings to strings")
        return dict(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "is not a known setting")


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _when(section: _Section, name: str, required: bool) -> datetime | None:
    value = section.get(name, (str, date), required=required)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise section.fail(name, f"must be a date like 2024-03-01, got {value!r}") from None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _resolve(path: str, base_dir: Path) -> str:
    """Relative paths are relative to the configuration's folder; one that holds an Airflow template
    is resolved once rendered (it may render to an absolute path or a URL)."""
    return path if "{{" in path else located(path, base_dir)


def _source(section: _Section, base_dir: Path) -> SourceSpec:
    kind = section.choice("type", SOURCE_TYPES, "csv")
    chunk_rows = section.get("chunk_rows", int, DEFAULT_CHUNK_ROWS)
    if chunk_rows < 1:
        raise section.fail("chunk_rows", "must be at least 1")
    common = {
        "type": kind,
        "chunk_rows": chunk_rows,
        "conn_id": section.get("conn_id", str),
        "base_dir": str(base_dir),
    }
    if kind in ("csv", "jsonl"):
        max_record_bytes = section.get("max_record_bytes", int, DEFAULT_MAX_RECORD_BYTES)
        if max_record_bytes < 1:
            raise section.fail("max_record_bytes", f"must be at least 1, got {max_record_bytes}")
        spec = SourceSpec(
            **common,
            path=_resolve(section.get("path", str, required=True), base_dir),
            on_missing=section.choice("on_missing", ("fail", "skip", "wait"), "fail"),
            wait_timeout_seconds=_duration(section, "wait_timeout", 12 * 3600, most_days=7),
            wait_poke_seconds=_duration(section, "wait_poke", 300, most_days=1),
            delimiter=section.get("delimiter", str, ",") if kind == "csv" else ",",
            max_record_bytes=max_record_bytes,
            duplicate_headers=_duplicate_headers(section) if kind == "csv" else (),
        )
        for key in ("wait_timeout", "wait_poke"):
            if key in section.data and spec.on_missing != "wait":
                raise section.fail(key, "applies with on_missing: wait")
        if spec.wait_timeout_seconds < 1 or spec.wait_poke_seconds < 1:
            raise section.fail(
                "wait_timeout" if spec.wait_timeout_seconds < 1 else "wait_poke", "must not be 0"
            )
    else:
        if not common["conn_id"]:
            raise section.fail("conn_id", "is required for a sql source (an Airflow SQL connection)")
        table, query_file = section.get("table", str), section.get("query_file", str)
        if bool(table) == bool(query_file):
            raise section.fail("table", "or 'query_file' is needed for a sql source, not both")
        time_column = section.get("time_column", str)
        if table and not time_column:
            raise section.fail("time_column", "is required with 'table' (the event-time column)")
        time_type = section.get("time_type", str, None if table else "timestamptz")
        if time_type is None:
            raise section.fail(
                "time_type",
                "is required with 'table': timestamptz, timestamp (naive UTC), epoch_ms or epoch_s",
            )
        if time_type not in TIME_TYPES:
            raise section.fail("time_type", f"must be one of {', '.join(TIME_TYPES)}, got {time_type!r}")
        if query_file:
            query_file = _resolve(query_file, base_dir)
            if not Path(query_file).is_file():
                raise section.fail("query_file", f"names no file: {query_file}")
        window_on = section.choice("window_on", WINDOW_ON, "event_time")
        load_time_column = section.get("load_time_column", str)
        load_time_type = section.get("load_time_type", str)
        if window_on == "load_time" and table and not load_time_column:
            raise section.fail("load_time_column", "is required with 'table' and window_on: load_time")
        if load_time_column and (window_on != "load_time" or not table):
            raise section.fail("load_time_column", "applies to a 'table' with window_on: load_time")
        if load_time_type is not None and not load_time_column:
            raise section.fail("load_time_type", "applies with load_time_column")
        if load_time_type is not None and load_time_type not in TIME_TYPES:
            raise section.fail(
                "load_time_type", f"must be one of {', '.join(TIME_TYPES)}, got {load_time_type!r}"
            )
        spec = SourceSpec(
            **common,
            table=table,
            query_file=query_file,
            time_column=time_column,
            time_type=time_type,
            order_by=section.strings("order_by"),
            payload_column=section.get("payload_column", str),
            window_on=window_on,
            load_time_column=load_time_column,
            load_time_type=load_time_type,
        )
    section.done()
    return spec


_DURATION = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400, "week": 604_800}


def _duration(section: _Section, name: str, default: int, *, most_days: int) -> int:
    """``2 days``, ``36 hours``, ``90 minutes`` or ``0`` -> seconds. A number needs its unit: ``2``
    alone could mean seconds or days, so it is refused."""
    value = section.get(name, (int, str))
    if value is None:
        return default
    if value == 0 or (isinstance(value, str) and value.strip() == "0"):
        return 0
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise section.fail(name, f"must be a duration with its unit, such as '2 days', got {value!r}")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds > most_days * 86_400:
        raise section.fail(name, f"must be at most {most_days} days (a manual run's longest), got {value!r}")
    return seconds


def _duplicate_headers(section: _Section) -> tuple[tuple[str, int], ...]:
    """``{header: occurrence}`` -> sorted pairs: a spec is an immutable, hashable tuple."""
    value = section.get("duplicate_headers", dict, {})
    for name, occurrence in value.items():
        if not isinstance(name, str) or type(occurrence) is not int or occurrence < 1:
            raise section.fail(
                "duplicate_headers",
                f"must map header names to occurrences (1 is the first), got {name!r}: {occurrence!r}",
            )
    return tuple(sorted(value.items()))


def _event_name(section: _Section) -> EventNameSpec:
    constant = section.get("constant", str)
    if constant is not None and not (0 < len(constant) <= MAX_EVENT_NAME_CHARS):
        raise section.fail("constant", f"must have 1 to {MAX_EVENT_NAME_CHARS} characters")
    names = section.string_map("names")
    for pair in names:
        if "." not in pair:
            raise section.fail("names", f"key {pair!r} must be 'item_type.event_type', e.g. wt.play")
    spec = EventNameSpec(
        constant=constant,
        prefix=section.get("prefix", str, "WalkMe "),
        item_type=section.get("item_type", str),
        event_type=section.get("event_type", str),
        names=names,
        item_type_names=section.string_map("item_type_names"),
        event_type_names=section.string_map("event_type_names"),
    )
    section.done()
    return spec


def _user_properties(section: _Section, preset: str | None) -> UserPropertiesSpec:
    """The ``user_properties`` section: user attribute columns, their Heap names, and options."""
    columns = section.strings("columns")
    if not columns and preset not in PRESET_USER_COLUMNS:
        raise section.fail("columns", "is required when mapping.preset is none (globs over the headers)")
    patterns = columns or tuple(PRESET_USER_COLUMNS[preset or ""])
    names = section.string_map("names")
    for column, name in names.items():
        problem = name_problem(name)
        if problem:
            raise section.fail("names", f"gives column {column!r} the Heap name {name!r}, which {problem}")
        if not matches_any(column, patterns):
            raise section.fail(
                "names",
                f"renames {column!r}, which user_properties.columns ({', '.join(patterns)}) does not select",
            )
    targets = list(names.values())
    for column in columns:
        name = names.get(column, default_name(column))
        problem = "" if has_glob(column) else name_problem(name)
        if problem:
            raise section.fail(
                "columns",
                f"selects {column!r}, whose Heap name {name!r} {problem}: give it another under "
                "user_properties.names",
            )
        if not has_glob(column) and column not in names:
            targets.append(name)
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        raise section.fail("names", f"gives two columns the Heap name {repeated[0]!r}")
    spec = UserPropertiesSpec(
        columns=columns,
        names=tuple(sorted(names.items())),
        keep_on_events=section.get("keep_on_events", bool, False),
        empty_erases=section.get("empty_erases", bool, False),
    )
    section.done()
    return spec


def _mapping(section: _Section, user_properties: _Section | None = None) -> MappingSpec:
    preset = section.get("preset", str, "webhook")
    if preset not in (*PRESETS, "none"):
        raise section.fail("preset", f"must be one of {', '.join(PRESETS)}, none; got {preset!r}")
    columns_section = section.section("columns")
    columns: dict[str, list[str]] = {}
    for role in ROLES:
        value = columns_section.strings(role)
        if value:
            columns[role] = list(value)
    columns_section.done()
    if preset == "none":
        for role in ("identity", "timestamp"):
            if role not in columns:
                raise columns_section.fail(role, "is required when preset is none")
    props = section.section("properties")
    include, exclude = props.strings("include"), props.strings("exclude")
    props.done()
    if "user_properties" in section.data:
        if user_properties is not None:
            raise section.fail("user_properties", "is set twice: keep the pipeline's user_properties section")
        user_properties = section.section("user_properties")
    spec = MappingSpec(
        preset=None if preset == "none" else preset,
        columns=columns,
        event_name=_event_name(section.section("event_name")),
        include_properties=include,
        exclude_properties=exclude,
        include_non_production=section.get("include_non_production", bool, False),
        user_properties=None
        if user_properties is None
        else _user_properties(user_properties, None if preset == "none" else preset),
    )
    section.done()
    return spec


def _dead_letters(section: _Section, base_dir: Path) -> str | None:
    location = section.get("dead_letters", str)
    return located(location, base_dir) if location else None


def _ratio(section: _Section, name: str, default: float) -> float:
    value = section.get(name, (int, float), default)
    if not 0 <= value <= 1:
        raise section.fail(name, f"must be between 0 and 1, got {value}")
    return float(value)


def parse_source(data: SourceSpec | dict[str, Any], where: str, base_dir: Path) -> SourceSpec:
    """A ``source`` section on its own (the operator's, written by hand as a dict); a spec as it is."""
    return data if isinstance(data, SourceSpec) else _source(_Section(data, where, "source"), base_dir)


def parse_mapping(data: MappingSpec | dict[str, Any] | None, where: str) -> MappingSpec:
    """A ``mapping`` section on its own; a spec as it is."""
    return data if isinstance(data, MappingSpec) else _mapping(_Section(data or {}, where, "mapping"))


def parse_pipeline(name: str, data: Any, where: str, base_dir: Path) -> Pipeline:
    where = f"{where}: pipeline '{name}'"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: the name may hold only letters, digits and underscores")
    top = _Section(data, where, "")
    schedule = top.get("schedule", str, "@daily")
    pipeline = Pipeline(
        name=name,
        source=_source(top.section("source"), base_dir),
        mapping=_mapping(
            top.section("mapping"),
            top.section("user_properties") if "user_properties" in top.data else None,
        ),
        start_date=_when(top, "start_date", required=True),  # type: ignore[arg-type]
        end_date=_when(top, "end_date", required=False),
        schedule=schedule,
        heap_conn_id=top.get("heap_conn_id", str, DEFAULT_HEAP_CONN_ID),
        description=top.get("description", str, ""),
        catchup=top.get("catchup", bool, True),
        max_active_runs=top.get("max_active_runs", int, 1),
        retries=top.get("retries", int, 2),
        retry_delay_seconds=top.get("retry_delay_seconds", int, 120),
        shards=top.get("shards", int, 1),
        tags=top.strings("tags"),
        ledger_conn_id=top.get("ledger_conn_id", str, DEFAULT_LEDGER_CONN_ID),
        pool=top.get("pool", str, ""),
        dead_letters=_dead_letters(top, base_dir),
        dead_letters_conn_id=top.get("dead_letters_conn_id", str),
        max_invalid_ratio=_ratio(top, "max_invalid_ratio", 0.1),
        lateness_seconds=_duration(top, "lateness", DEFAULT_LATENESS_SECONDS, most_days=MAX_LATENESS_DAYS),
    )
    top.done()
    if not 1 <= pipeline.shards <= MAX_SHARDS:
        raise top.fail("shards", f"must be between 1 and {MAX_SHARDS}, got {pipeline.shards}")
    if pipeline.retry_delay_seconds < 0 or pipeline.retries < 0:
        raise top.fail("retries" if pipeline.retries < 0 else "retry_delay_seconds", "must not be negative")
    if pipeline.end_date and pipeline.end_date <= pipeline.start_date:
        raise top.fail("end_date", "must be after start_date")
    return pipeline


def config_path(dags_folder: str | Path | None = None) -> Path:
    """The pipelines file: ``WALKME_HEAP_CONFIG``; else this project folder's
    ``include/pipelines.yaml`` when the package runs from the folder; else, for an installed
    package, ``pipelines.yaml`` in the DAGs folder (``dags_folder``: Airflow's ``[core] dags_folder``,
    which the Airflow side passes; without it ``AIRFLOW__CORE__DAGS_FOLDER``, ``$AIRFLOW_HOME/dags``)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    folder = dags_folder or os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    if not folder:
        folder = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "dags"
    return Path(folder).expanduser() / "pipelines.yaml"


def load_pipelines(path: Path | str | None = None, dags_folder: str | Path | None = None) -> list[Pipeline]:
    """Read and validate every pipeline of a configuration file (``config_path`` when not given)."""
    path = Path(path) if path else config_path(dags_folder)
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: configuration file not found (set {CONFIG_ENV})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    root = _Section(data or {}, where, "")
    pipelines_data = root.get("pipelines", dict, required=True)
    root.done()
    return [
        parse_pipeline(str(name), body, where, path.resolve().parent) for name, body in pipelines_data.items()
    ]
