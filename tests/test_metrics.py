"""The replay's metrics: which names, values and tags one summary becomes; names Airflow accepts;
the newest acknowledged event (not a refused one) behind the lag; a failing backend never fails a
run. The statsd packets of a real task run: tests/operators/test_metrics.py."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime

import pytest
from airflow.sdk._shared.observability.metrics.validators import (
    stat_name_default_handler,
    stat_name_otel_handler,
)

from tests.delivery.test_outbox import ScriptedHeap, make_outbox
from tests.helpers import DAY
from walkme_heap.metrics import METRICS, Point, emit, pipeline_segment, points
from walkme_heap.summary import ReplaySummary

NOW = datetime(2024, 3, 12, 0, 0, tzinfo=UTC)


def summary(**counts: object) -> ReplaySummary:
    settings: dict[str, object] = {
        "read": 20,
        "sent": 9,
        "already_sent": 4,
        "invalid": Counter({"missing_identity": 2, "unparsable_time": 1}),
        "rejected": Counter({"rejected_by_heap": 1}),
        "skipped": Counter({"duplicate_in_source": 3}),
        "throttled": 2,
        "retries": 5,
        "waited_seconds": 1.25,
        "app_id": "1234567890",
        "newest_sent": "2024-03-10T23:59:59.999+00:00",
        "users": 6,
        "users_updated": 4,
        "users_unchanged": 1,
        "users_refused": 1,
        **counts,
    }
    return ReplaySummary("web", DAY.as_dict(), **settings)  # type: ignore[arg-type]


def by_name(found: list[Point]) -> dict[str, list[Point]]:
    named: dict[str, list[Point]] = {}
    for point in found:
        named.setdefault(point.name, []).append(point)
    return named


def test_each_count_goes_out_tagged_and_under_the_pipelines_name() -> None:
    named = by_name(points(summary(), NOW))
    tags = {"pipeline": "web", "app_id": "1234567890"}
    assert [(p.kind, p.value, p.tags) for p in named["walkme_heap.events.sent"]] == [("counter", 9, tags)]
    assert [(p.kind, p.value, p.tags) for p in named["walkme_heap.web.events.sent"]] == [
        ("counter", 9, {"app_id": "1234567890"})  # the pipeline is in the name
    ]
    expected = {
        "events.read": 20,
        "events.sent": 9,
        "events.already_sent": 4,
        "events.invalid": 3,
        "events.rejected": 1,
        "events.skipped": 3,
        "requests.throttled": 2,
        "requests.retries": 5,
        "rate_limit.waited": 1250.0,  # ms, as Airflow's timing takes it
        "newest_sent.seconds_ago": 86_400.001,  # to NOW, 2024-03-12 00:00
        "users.updated": 4,
        "users.refused": 1,
    }
    assert set(expected) == set(METRICS)
    for metric, value in expected.items():
        (plain,) = named[f"walkme_heap.web.{metric}"]
        assert (plain.kind, plain.value) == (METRICS[metric][0], value), metric
        assert sum(p.value for p in named[f"walkme_heap.{metric}"]) == value, metric
    assert len(named) == 2 * len(METRICS)


def test_a_run_without_user_properties_sends_no_user_series() -> None:
    named = by_name(points(summary(users=0, users_updated=0, users_unchanged=0, users_refused=0), NOW))
    assert not [name for name in named if ".users." in name]
    assert "walkme_heap.events.sent" in named


def test_invalid_rejected_and_skipped_counts_carry_their_reason_as_a_tag() -> None:
    named = by_name(points(summary(), NOW))
    invalid = {p.tags["reason"]: p.value for p in named["walkme_heap.events.invalid"]}
    assert invalid == {"missing_identity": 2, "unparsable_time": 1}
    assert all(p.tags["pipeline"] == "web" for p in named["walkme_heap.events.invalid"])
    (none,) = by_name(points(summary(invalid=Counter()), NOW))["walkme_heap.events.invalid"]
    assert (none.value, none.tags) == (0, {"pipeline": "web", "app_id": "1234567890"})  # a zero goes out


def test_the_lag_is_seconds_since_the_newest_acknowledged_event() -> None:
    named = by_name(points(summary(newest_sent="2024-03-11T00:00:00.000+00:00"), NOW))
    (lag,) = named["walkme_heap.newest_sent.seconds_ago"]
    assert (lag.kind, lag.value) == ("gauge", 86_400.0)
    nothing = by_name(points(summary(sent=0, newest_sent=None), NOW))  # nothing acknowledged: no lag
    assert "walkme_heap.newest_sent.seconds_ago" not in nothing
    future = by_name(points(summary(newest_sent="2024-03-12T01:00:00.000+00:00"), NOW))
    assert future["walkme_heap.newest_sent.seconds_ago"][0].value == 0.0


def test_no_app_id_no_app_tag_and_no_identity_anywhere() -> None:
    found = points(summary(app_id=None), NOW)
    assert {key for p in found for key in p.tags} == {"pipeline", "reason"}
    reasons = {"missing_identity", "unparsable_time", "rejected_by_heap", "duplicate_in_source"}
    assert {value for p in found for value in p.tags.values()} == {"web", *reasons}


def test_every_name_passes_airflows_validation_with_a_prefix() -> None:
    """Airflow drops (logs) a name its handlers refuse: 250 characters, OpenTelemetry's 255 with the
    prefix, ASCII letters, digits, ``_ . - /``."""
    for pipeline in ("web", "a" * 160, "eu.web shop"):
        for point in points(ReplaySummary(pipeline, DAY.as_dict(), sent=1), NOW):
            assert stat_name_default_handler(point.name) == point.name
            stat_name_otel_handler("airflow", point.name)


def test_a_pipeline_name_becomes_one_name_segment() -> None:
    assert pipeline_segment("web_shop-2") == "web_shop-2"
    assert pipeline_segment("eu.web shop") == "eu__web_shop"  # a dot would add a level


def test_a_pipeline_name_too_long_for_a_metric_name_gets_only_the_tagged_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    long = "a" * 170
    found = points(ReplaySummary(long, DAY.as_dict(), sent=1), NOW)
    assert {p.name.count(".") for p in found} == {2}  # walkme_heap.<group>.<name>: no pipeline level
    assert "too long for a metric name" in caplog.text
    assert all(p.tags["pipeline"] == long for p in found)


class RecordingStats:
    """Stands in for Airflow's ``stats`` module: what was sent, as (method, name, value, tags)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float, dict]] = []

    def incr(self, stat: str, count: int | None = None, *, tags: dict | None = None) -> None:
        self.sent.append(("incr", stat, count or 0, tags or {}))

    def gauge(self, stat: str, value: float, *, tags: dict | None = None) -> None:
        self.sent.append(("gauge", stat, value, tags or {}))

    def timing(self, stat: str, dt: float, *, tags: dict | None = None) -> None:
        self.sent.append(("timing", stat, dt, tags or {}))


def test_emit_sends_each_point_through_the_matching_stats_call() -> None:
    recording = RecordingStats()
    emit(summary(), recording, NOW)
    expected = [
        ({"counter": "incr", "gauge": "gauge", "timer": "timing"}[p.kind], p.name, p.value, p.tags)
        for p in points(summary(), NOW)
    ]
    assert recording.sent == expected
    assert ("incr", "walkme_heap.web.events.sent", 9, {"app_id": "1234567890"}) in recording.sent


def test_a_dry_run_sends_no_metrics() -> None:
    recording = RecordingStats()
    emit(summary(dry_run=True), recording, NOW)  # its "sent" only would be sent
    assert recording.sent == []


def test_a_failing_backend_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(RecordingStats):
        def incr(self, stat: str, count: int | None = None, *, tags: dict | None = None) -> None:
            raise OSError("statsd host unreachable")

    with caplog.at_level(logging.WARNING, logger="walkme_heap.metrics"):
        emit(summary(), Broken(), NOW)
    assert "pipeline 'web': metrics not sent (OSError: statsd host unreachable)" in caplog.text


def test_the_newest_sent_is_the_newest_event_heap_acknowledged_not_one_it_refused() -> None:
    """Batches in any order; the newest event of all is refused (400): it does not count."""
    stamps = [
        "2024-03-10T05:00:00.000+00:00",
        "2024-03-10T23:00:00.000+00:00",
        "2024-03-10T01:00:00.000+00:00",
    ]
    events = [
        {"identity": f"u{i}", "event": "E", "timestamp": t, "idempotency_key": f"k{i}"}
        for i, t in enumerate(stamps)
    ]
    refused = {"identity": "poison", "event": "E", "timestamp": "2024-03-10T23:59:00.000+00:00"}
    refused["idempotency_key"] = "kp"
    totals = ReplaySummary("p", DAY.as_dict())
    outbox = make_outbox(totals, ScriptedHeap([], {"poison"}), max_events=2)
    outbox.put([*events, refused])
    outbox.finish()
    assert (totals.sent, totals.total_rejected) == (3, 1)
    assert totals.newest_sent == "2024-03-10T23:00:00.000+00:00"
    assert ReplaySummary.from_dict(totals.as_dict()) == totals
