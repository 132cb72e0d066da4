"""The replay task's metrics as a statsd server receives them: a UDP socket on loopback, Airflow's
metrics configured as a deployment would (``AIRFLOW__METRICS__STATSD_*``) and set up as Airflow's
task runner does it, the operator run as Airflow calls ``execute`` against the Heap emulator. Every
count equals the task's summary; a run that stops still reports how far it got."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.observability import stats
from airflow.sdk.observability.metrics import stats_utils

from tests.helpers import configure, received
from tests.operators.test_replay import context, operator
from walkme_heap.emulator import HeapEmulator
from walkme_heap.replay import DeliveryError

COUNTS = {
    "events.read": "read",
    "events.sent": "sent",
    "events.already_sent": "already_sent",
    "events.invalid": "invalid",
    "events.rejected": "rejected",
    "events.skipped": "skipped",
    "requests.throttled": "throttled",
    "requests.retries": "retries",
}


class StatsdListener:
    """A statsd server's socket: the packets Airflow's statsd client sent, as (name, value, type)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]

    def packets(self, prefix: str = "airflow.walkme_heap.") -> list[tuple[str, float, str]]:
        """Everything received so far (the client sends synchronously: all of it is here)."""
        self.socket.settimeout(0.5)
        found = []
        while True:
            try:
                data = self.socket.recv(65_535).decode()
            except TimeoutError:
                return found
            for line in data.splitlines():  # one metric a packet; a pipeline joins them by lines
                name, _, rest = line.partition(":")
                value, kind = rest.split("|")[:2]
                if name.startswith(prefix):
                    found.append((name, float(value), kind))

    def totals(self, packets: list[tuple[str, float, str]]) -> dict[str, float]:
        """Counters added up per name (statsd's own aggregation); other kinds: their last value."""
        out: dict[str, float] = {}
        for name, value, kind in packets:
            out[name] = out.get(name, 0.0) + value if kind == "c" else value
        return out


@contextmanager
def statsd_metrics(monkeypatch: pytest.MonkeyPatch, **settings: str) -> Iterator[StatsdListener]:
    """Airflow's metrics on, to a listener; as the task runner's ``main`` sets Stats up (once per
    task process, from the configuration), and back to the configuration's (off) afterwards."""
    listener = StatsdListener()
    with monkeypatch.context() as env:
        for key, value in {
            "STATSD_ON": "True",
            "STATSD_HOST": "127.0.0.1",
            "STATSD_PORT": str(listener.port),
            "STATSD_PREFIX": "airflow",
            **settings,
        }.items():
            env.setenv(f"AIRFLOW__METRICS__{key}", value)
        stats.initialize(
            factory=stats_utils.get_stats_factory(),
            export_legacy_names=conf.getboolean("metrics", "legacy_names_on"),
        )
        try:
            yield listener
        finally:
            listener.socket.close()
    stats.initialize(
        factory=stats_utils.get_stats_factory(),
        export_legacy_names=conf.getboolean("metrics", "legacy_names_on"),
    )


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdListener]:
    with statsd_metrics(monkeypatch) as listener:
        yield listener


def heap_with(emulator: HeapEmulator, monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_HEAP_DEFAULT",
        json.dumps({"conn_type": "heap", "host": emulator.url, "login": "test-app", "extra": extra}),
    )


def assert_counts_match(totals: dict[str, float], summary: dict) -> None:
    for metric, key in COUNTS.items():
        assert totals[f"airflow.walkme_heap.{metric}"] == summary[key], metric
        assert totals[f"airflow.walkme_heap.p.{metric}"] == summary[key], metric


def test_a_finished_replay_sends_its_counts_waits_and_lag_to_statsd(
    heap_connection: HeapEmulator, statsd: StatsdListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 2; one 429 and one 503 on the way: every count of the summary arrives, under the
    tagged name and the pipeline's; the wait as a timer; the lag from the newest event Heap took."""
    heap_with(heap_connection, monkeypatch, max_batch_events=2)
    configure(heap_connection, throttle_burst=1, burst_5xx=1)
    before = datetime.now(UTC)
    summary = operator().execute(context())
    after = datetime.now(UTC)
    assert (summary["read"], summary["sent"], summary["invalid"]) == (10, 5, 2)
    assert summary["throttled"] >= 1 and summary["retries"] >= 1
    packets = statsd.packets()
    totals = statsd.totals(packets)
    assert_counts_match(totals, summary)
    kinds = {name.split(".", 2)[2]: kind for name, _, kind in packets}
    assert kinds["events.sent"] == "c" and kinds["p.events.sent"] == "c"
    assert kinds["rate_limit.waited"] == "ms" and kinds["newest_sent.seconds_ago"] == "g"
    waited = totals["airflow.walkme_heap.p.rate_limit.waited"]
    assert waited >= 900.0  # the 429's pause: about its base second
    assert abs(waited - summary["waited_seconds"] * 1000) <= 50  # the summary rounds to 0.1 s
    newest = max(e["timestamp"] for e in received(heap_connection))
    assert summary["newest_sent"] == newest
    lag = totals["airflow.walkme_heap.p.newest_sent.seconds_ago"]
    assert lag == totals["airflow.walkme_heap.newest_sent.seconds_ago"]
    newest_time = datetime.fromisoformat(newest)
    assert (before - newest_time).total_seconds() - 1 <= lag <= (after - newest_time).total_seconds() + 1
    assert lag > 86_400  # the day is in 2024


def test_a_second_run_counts_the_day_as_already_sent_and_sends_no_lag(
    heap_connection: HeapEmulator, statsd: StatsdListener
) -> None:
    operator().execute(context())
    statsd.packets()  # the first run's
    summary = operator().execute(context())
    assert (summary["sent"], summary["already_sent"]) == (0, 5)
    totals = statsd.totals(statsd.packets())
    assert_counts_match(totals, summary)
    assert not any("newest_sent" in name for name in totals)  # nothing acknowledged in this run


def test_a_day_with_too_many_invalid_rows_still_reports_with_tags_for_influxdb(
    heap_connection: HeapEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task fails (2 of 10 rows invalid, over 10%) after sending every valid event: its counts
    go out; with ``statsd_influxdb_enabled`` the tagged names carry pipeline, app and reason."""
    with statsd_metrics(monkeypatch, STATSD_INFLUXDB_ENABLED="True") as listener:
        with pytest.raises(AirflowFailException, match="over max_invalid_ratio"):
            operator(max_invalid_ratio=0.1).execute(context())
        totals = listener.totals(listener.packets())
    invalid = {
        name: value
        for name, value in totals.items()
        if name.startswith("airflow.walkme_heap.events.invalid,")
    }
    assert invalid == {
        "airflow.walkme_heap.events.invalid,pipeline=p,app_id=test-app,reason=missing_identity": 1,
        "airflow.walkme_heap.events.invalid,pipeline=p,app_id=test-app,reason=unparsable_time": 1,
    }
    assert totals["airflow.walkme_heap.events.sent,pipeline=p,app_id=test-app"] == 5
    assert totals["airflow.walkme_heap.p.events.sent,app_id=test-app"] == 5
    assert "airflow.walkme_heap.p.newest_sent.seconds_ago,app_id=test-app" in totals


def test_a_run_heap_does_not_acknowledge_reports_how_far_it_got(
    heap_connection: HeapEmulator, statsd: StatsdListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    heap_with(heap_connection, monkeypatch, retry_max_seconds=1, max_batch_events=2)
    configure(heap_connection, burst_5xx=10_000)
    with pytest.raises(DeliveryError) as info:
        operator().execute(context())
    summary = info.value.summary.as_dict()
    assert summary["sent"] == 0 and summary["retries"] >= 1
    totals = statsd.totals(statsd.packets())
    assert_counts_match(totals, summary)
    assert not any("newest_sent" in name for name in totals)


def test_metrics_that_cannot_be_sent_do_not_fail_the_replay(
    heap_connection: HeapEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A statsd setting Airflow cannot use (its backend raises on the first metric): logged, and the
    day succeeds."""
    with statsd_metrics(monkeypatch, STATSD_PORT="not-a-port") as listener:
        summary = operator().execute(context())
        assert listener.packets() == []
    assert summary["sent"] == 5
    assert "pipeline 'p': metrics not sent (" in caplog.text
    assert "the replay is not affected" in caplog.text
