"""The window rule: which rows a run replays, and where its bounds come from.

A run replays rows whose event time is in ``[start, end)``, in UTC. Bounds come from the trigger
form (``start`` / ``end`` params) when given, else from the run's data interval; a run with neither
is refused with a message that says what to fill in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any


class WindowError(ValueError):
    """The run's window cannot be determined or is not acceptable."""


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval ``[start, end)``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None:
                raise WindowError(f"window {name} must be timezone-aware")
            utc = value.astimezone(UTC)  # a plain datetime: Airflow's pendulum ones lose their zone
            plain = datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=UTC)  # in arithmetic
            object.__setattr__(self, name, plain)
        if self.end <= self.start:
            raise WindowError(
                f"window end {self.end:%Y-%m-%dT%H:%M:%SZ} must be after its start "
                f"{self.start:%Y-%m-%dT%H:%M:%SZ}"
            )

    @property
    def start_ms(self) -> int:
        return _epoch_ms(self.start)

    @property
    def end_ms(self) -> int:
        return _epoch_ms(self.end)

    def days(self) -> Iterator[date]:
        """Each UTC calendar day the window touches (for per-day file paths)."""
        day = self.start.date()
        last = (self.end - timedelta(microseconds=1)).date()
        while day <= last:
            yield day
            day += timedelta(days=1)

    @property
    def label(self) -> str:
        """``2024-03-10`` for a whole UTC day, else ``start--end``; used in names and logs."""
        if self.end - self.start == timedelta(days=1) and self.start.time() == datetime.min.time():
            return self.start.strftime("%Y-%m-%d")
        return f"{self.start:%Y-%m-%dT%H%M%SZ}--{self.end:%Y-%m-%dT%H%M%SZ}"

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def _epoch_ms(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def parse_bound(value: Any, name: str) -> datetime:
    """Parse a form value: a date (``2024-03-10``) or an ISO date-time; naive means UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise WindowError(
                f"param '{name}' is {text!r}: give a date like 2024-03-10 or a date-time like "
                "2024-03-10T06:00:00+00:00"
            ) from None
    else:
        raise WindowError(f"param '{name}' is empty")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def resolve_window(
    params: dict[str, Any] | None,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    *,
    max_span: timedelta | None = None,
    now: datetime | None = None,
) -> Window:
    """Pick the window for a run: form params first, then the data interval, else a clear error."""
    params = params or {}
    start_param, end_param = params.get("start"), params.get("end")
    if start_param or end_param:
        if not (start_param and end_param):
            missing = "end" if start_param else "start"
            raise WindowError(f"params 'start' and 'end' go together: fill in '{missing}' too")
        window = Window(parse_bound(start_param, "start"), parse_bound(end_param, "end"))
        now = now or datetime.now(UTC)
        if window.start > now:
            raise WindowError(f"param 'start' ({window.start:%Y-%m-%d %H:%M}Z) is in the future")
        if window.end > now + timedelta(days=1):
            raise WindowError(f"param 'end' ({window.end:%Y-%m-%d %H:%M}Z) is more than a day ahead")
        if max_span is not None and window.end - window.start > max_span:
            raise WindowError(
                f"the range {window.label} spans more than {max_span.days} days; "
                "use a backfill for longer ranges"
            )
        return window
    if data_interval_start is None or data_interval_end is None or (data_interval_end <= data_interval_start):
        raise WindowError(
            "this run has no data interval (a manual run without a logical date?): trigger it "
            "with the 'start' and 'end' params filled in, e.g. start=2024-03-10, end=2024-03-11"
        )
    return Window(data_interval_start, data_interval_end)
