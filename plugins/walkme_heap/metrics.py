"""A replay's metrics, for Airflow's metrics (``airflow.sdk.observability.stats``).

Airflow's task runner sets that backend up in the task's process from ``[metrics]`` (statsd,
Datadog's statsd or OpenTelemetry; nothing when all are off), so a dashboard sees the replay beside
Airflow's own task metrics, through the same agent. Like the rest of the core, this module has no
Airflow import: the operator hands over the run's ``ReplaySummary`` (once the run is over, or stopped
with a summary) and Airflow's ``stats`` module to send it through.

Each metric goes out under two names, for the two kinds of backend:

- ``walkme_heap.<metric>`` with tags ``pipeline``, ``app_id`` (the Heap app; never an identity or
  anything from an event) and, for invalid / rejected / skipped events, ``reason``: for backends that
  keep tags (Datadog with ``statsd_datadog_metrics_tags``, OpenTelemetry, statsd with
  ``statsd_influxdb_enabled``).
- ``walkme_heap.<pipeline>.<metric>`` (tags without ``pipeline``): plain statsd drops tags, so the
  pipeline is in the name, as Airflow's legacy names hold the DAG id. Not both in one sum.

Counts are one run's (one try: a retried day counts its first try's events as sent and the retry's
as already sent). A dry run sends no metrics: its "sent" only would be sent. Sending a metric never
fails a replay: a lost metric is logged, the run's result stands.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from walkme_heap.summary import ReplaySummary

log = logging.getLogger(__name__)

PREFIX = "walkme_heap"
# Airflow refuses longer names (250 characters without its prefix; OpenTelemetry's 255 with it):
# a pipeline name too long for that gets only the tagged names, with a warning.
MAX_NAME_LENGTH = 200

Kind = Literal["counter", "gauge", "timer"]

# name -> (kind, what it counts), in the order sent; the README's table lists the same.
METRICS: dict[str, tuple[Kind, str]] = {
    "events.read": ("counter", "rows read from the source (this shard's)"),
    "events.sent": ("counter", "events Heap acknowledged"),
    "events.already_sent": ("counter", "events an earlier run sent (the ledger): not sent again"),
    "events.invalid": ("counter", "rows that are no valid event, by reason (dead letters)"),
    "events.rejected": ("counter", "events Heap refused (400), by reason (dead letters)"),
    "events.skipped": ("counter", "rows not sent by design, by reason (repeats, outside the window...)"),
    "requests.throttled": ("counter", "requests Heap answered 429"),
    "requests.retries": ("counter", "requests sent again (5xx, timeouts, dropped connections)"),
    "rate_limit.waited": ("timer", "time spent waiting for the rate limits and after 429s (ms)"),
    "newest_sent.seconds_ago": ("gauge", "now minus the newest event time Heap acknowledged (s)"),
    "users.updated": ("counter", "users whose properties Heap acknowledged (pipelines with user_properties)"),
    "users.refused": ("counter", "users whose properties Heap refused (dead letters)"),
}


class Stats(Protocol):
    """What is used of Airflow's ``airflow.sdk.observability.stats`` (the module itself is passed)."""

    def incr(self, stat: str, count: int | None = None, *, tags: dict[str, Any] | None = None) -> None: ...

    def gauge(self, stat: str, value: float, *, tags: dict[str, Any] | None = None) -> None: ...

    def timing(self, stat: str, dt: float, *, tags: dict[str, Any] | None = None) -> None: ...


@dataclass(frozen=True)
class Point:
    """One value for Airflow's Stats: ``counter`` -> ``incr``, ``gauge``, ``timer`` -> ``timing`` (ms)."""

    kind: Kind
    name: str
    value: float
    tags: dict[str, str] = field(default_factory=dict)


def pipeline_segment(pipeline: str) -> str:
    """The pipeline as one segment of a metric name: a dot would add a level (Airflow writes
    ``__`` for it in its legacy names), other characters Airflow refuses become ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", pipeline.replace(".", "__"))


def lag_seconds(summary: ReplaySummary, now: datetime) -> float | None:
    """Seconds from the newest event Heap acknowledged in the run to ``now`` (None: nothing was
    acknowledged); an event time in the future counts as no lag."""
    if not summary.newest_sent:
        return None
    newest = datetime.fromisoformat(summary.newest_sent)
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    return max(0.0, round((now - newest).total_seconds(), 3))


def points(summary: ReplaySummary, now: datetime) -> list[Point]:
    """The run's values, each under the tagged name and the pipeline's name (see the module)."""
    tags = {"pipeline": summary.pipeline}
    if summary.app_id:
        tags["app_id"] = summary.app_id
    segment = pipeline_segment(summary.pipeline)
    longest = f"{PREFIX}.{segment}.{max(METRICS, key=len)}"
    per_pipeline = len(longest) <= MAX_NAME_LENGTH
    if not per_pipeline:
        log.warning(
            "pipeline '%s': its name is too long for a metric name; only %s.* with tags are sent",
            summary.pipeline,
            PREFIX,
        )
    pipeline_tags = {k: v for k, v in tags.items() if k != "pipeline"}
    values: dict[str, float | Counter[str] | None] = {
        "events.read": summary.read,
        "events.sent": summary.sent,
        "events.already_sent": summary.already_sent,
        "events.invalid": summary.invalid,
        "events.rejected": summary.rejected,
        "events.skipped": summary.skipped,
        "requests.throttled": summary.throttled,
        "requests.retries": summary.retries,
        "rate_limit.waited": round(summary.waited_seconds * 1000.0, 3),
        "newest_sent.seconds_ago": lag_seconds(summary, now),
        # only from a run with users to sync: a pipeline without user_properties has no such series
        "users.updated": summary.users_updated if summary.users else None,
        "users.refused": summary.users_refused if summary.users else None,
    }
    out: list[Point] = []
    for metric, value in values.items():
        if value is None:
            continue
        kind = METRICS[metric][0]
        if isinstance(value, Counter):  # one point per reason for tags, the total for the name
            by_reason = [(reason, n) for reason, n in sorted(value.items()) if n]
            for reason, n in by_reason:
                out.append(Point(kind, f"{PREFIX}.{metric}", n, {**tags, "reason": reason}))
            if not by_reason:  # a zero still goes out: the series exists, its absence means no run
                out.append(Point(kind, f"{PREFIX}.{metric}", 0, dict(tags)))
            total: float = sum(n for _, n in by_reason)
        else:
            total = value
            out.append(Point(kind, f"{PREFIX}.{metric}", total, dict(tags)))
        if per_pipeline:
            out.append(Point(kind, f"{PREFIX}.{segment}.{metric}", total, dict(pipeline_tags)))
    return out


def emit(summary: ReplaySummary, stats: Stats, now: datetime | None = None) -> None:
    """Send a run's metrics through ``stats`` (Airflow's); never raises: the replay's result stands."""
    if summary.dry_run:
        return
    try:
        for point in points(summary, now or datetime.now(UTC)):
            if point.kind == "counter":
                stats.incr(point.name, int(point.value), tags=point.tags)
            elif point.kind == "gauge":
                stats.gauge(point.name, point.value, tags=point.tags)
            else:
                stats.timing(point.name, point.value, tags=point.tags)
    except Exception as exc:
        log.warning(
            "pipeline '%s': metrics not sent (%s: %s); the replay is not affected",
            summary.pipeline,
            type(exc).__name__,
            exc,
        )
