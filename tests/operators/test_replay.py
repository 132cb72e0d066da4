"""The replay task's failure policy, called as Airflow calls ``execute``: what a retry cannot fix
fails the task at once (``AirflowFailException``: no Airflow retry) with a message that names the
pipeline and the problem; what may succeed later (a day's file not there yet, Heap not answering)
is raised as itself, so Airflow retries it, and the retry resumes from the ledger."""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.helpers import DATA, DAY, configure, dead_letters, received, run_records, stats
from walkme_heap.emulator import HeapEmulator
from walkme_heap.home import default_home, default_ledger_path
from walkme_heap.ledger import Ledger
from walkme_heap.operators.replay import WalkMeToHeapOperator
from walkme_heap.replay import DeliveryError
from walkme_heap.sources.base import SourceMissingError

DAY_FILE = str(DATA / "e2e" / "walkme_webhooks_{date:%Y-%m-%d}.csv")
MAPPING = {"event_name": {"event_type": "complete"}, "properties": {"exclude": ["oType"]}}


def context(**params: Any) -> dict[str, Any]:
    return {
        "params": params,
        "data_interval_start": datetime(2024, 3, 10, tzinfo=UTC),
        "data_interval_end": datetime(2024, 3, 11, tzinfo=UTC),
        "run_id": "manual__test",
    }


def operator(**arguments: Any) -> WalkMeToHeapOperator:
    settings = {"source": {"path": DAY_FILE}, "mapping": MAPPING, "max_invalid_ratio": 0.5, **arguments}
    return WalkMeToHeapOperator(task_id="replay", pipeline="p", **settings)


def ledger() -> Ledger:
    return Ledger.sqlite(str(default_home() / "ledger.db"))


def point_heap_at(
    emulator: HeapEmulator, monkeypatch: pytest.MonkeyPatch, app_id: str = "test-app", **extra: Any
) -> None:
    """``heap_default`` with another app id (the connection pointed elsewhere, or a wrong id fixed)
    and ``extra`` settings, if any."""
    connection = {"conn_type": "heap", "host": emulator.url, "login": app_id}
    monkeypatch.setenv(
        "AIRFLOW_CONN_HEAP_DEFAULT", json.dumps({**connection, **({"extra": extra} if extra else {})})
    )


def test_too_many_invalid_rows_fail_without_retry_after_sending_every_valid_event(
    heap_connection: HeapEmulator,
) -> None:
    """The day's file has 2 invalid rows of 10: over the default max_invalid_ratio of 10%."""
    task = operator(max_invalid_ratio=0.1)
    with pytest.raises(
        AirflowFailException,
        match=r"pipeline 'p': 2 of 10 rows \(20.0%\) were invalid or rejected, over max_invalid_ratio "
        r"10.0%; every valid event was sent. Dead letters: .*/p/2024-03-10.jsonl",
    ):
        task.execute(context())
    assert len(received(heap_connection)) == 5
    (record,) = run_records(ledger(), "p")
    assert (record["status"], record["sent"], record["invalid"]) == ("failed", 5, 2)
    assert "over max_invalid_ratio 10.0%" in record["message"]
    letters = dead_letters(Path(record["dead_letters"]))  # kept: they are why the task failed
    assert sorted(d["reason"] for d in letters) == ["missing_identity", "unparsable_time"]


def test_a_failed_day_still_names_the_run_that_sends_its_events_past_the_lateness(
    heap_connection: HeapEmulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """The day's event of 23:59:59.999 the day before is past a lateness of 0: the task fails on its
    invalid rows, and its log still says how to send that event."""
    with pytest.raises(AirflowFailException, match="over max_invalid_ratio"):
        operator(max_invalid_ratio=0.1, lateness_seconds=0).execute(context())
    (hint,) = [line for line in capfd.readouterr().out.splitlines() if "arrived later than" in line]
    assert "1 event(s) arrived later than the pipeline's lateness (0:00:00) allows" in hint
    command = """airflow dags trigger adhoc_airflow --conf '{"start": "2024-03-09", "end": "2024-03-11"}'"""
    assert command in hint


def test_the_same_day_within_the_ratio_succeeds(heap_connection: HeapEmulator) -> None:
    summary = operator().execute(context())
    assert (summary["read"], summary["sent"], summary["invalid"]) == (10, 5, 2)


def test_a_missing_day_file_is_retried(heap_connection: HeapEmulator) -> None:
    """The file may still arrive: not an AirflowFailException, so Airflow retries."""
    with pytest.raises(
        SourceMissingError, match=r"pipeline 'p': no file for 2024-03-12 at .*2024-03-12"
    ) as info:
        operator().execute(
            {
                **context(),
                "data_interval_start": datetime(2024, 3, 12, tzinfo=UTC),
                "data_interval_end": datetime(2024, 3, 13, tzinfo=UTC),
            }
        )
    assert not isinstance(info.value, AirflowFailException)
    assert stats(heap_connection).get("requests", 0) == 0


def test_missing_columns_fail_without_retry_and_nothing_is_sent(heap_connection: HeapEmulator) -> None:
    task = operator(mapping={"columns": {"identity": "Customer Key"}})
    with pytest.raises(
        AirflowFailException,
        match=r"pipeline 'p': .* missing required columns: identity \(looked for Customer Key\); "
        "nothing was sent",
    ):
        task.execute(context())
    assert stats(heap_connection).get("requests", 0) == 0


def test_heap_not_acknowledging_is_retried_and_resumes(
    heap_connection: HeapEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_heap_at(heap_connection, monkeypatch, retry_max_seconds=1, max_batch_events=2)
    configure(heap_connection, burst_5xx=10_000)
    with pytest.raises(DeliveryError, match="pipeline 'p': a batch of 2 events was not acknowledged") as info:
        operator().execute(context())
    assert not isinstance(info.value, AirflowFailException)
    assert info.value.summary.sent == 0 and info.value.summary.unsent == 5
    assert run_records(ledger(), "p")[0]["status"] == "failed"
    configure(heap_connection, burst_5xx=0)
    summary = operator().execute(context())  # Airflow's retry
    assert (summary["sent"], summary["batches"]) == (5, 3)  # the connection's 2 events a request


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"params": {"start": "2024-03-12", "end": "2024-03-10"}}, "pipeline 'p': window end 2024-03-10"),
        (
            {
                "source": {
                    "type": "sql",
                    "conn_id": "nowhere",
                    "table": "t",
                    "time_column": "c",
                    "time_type": "epoch_ms",
                }
            },
            r"pipeline 'p': connection 'nowhere' is not defined; nothing was sent",
        ),
        (
            {"source": {"path": DAY_FILE, "chunk_rows": 0}},
            "pipeline 'p': key 'source.chunk_rows' must be at least 1",
        ),
        ({"shard": 4, "shards": 4}, "pipeline 'p': shard index 4 is not in 0..3"),
        ({"ledger_conn_id": "files"}, "ledger connection 'files' is not a SQL connection"),
    ],
)
def test_configuration_problems_fail_without_retry_before_anything_is_sent(
    heap_connection: HeapEmulator, monkeypatch: pytest.MonkeyPatch, changes: dict, message: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FILES", json.dumps({"conn_type": "fs"}))
    params = changes.pop("params", {})
    with pytest.raises(AirflowFailException, match=message):
        operator(**changes).execute(context(**params))
    assert stats(heap_connection).get("requests", 0) == 0


def test_acknowledgements_are_per_heap_app_and_a_dry_run_counts_for_the_connections_app(
    heap_connection: HeapEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A dry run makes no client, yet its "already sent" is for the app the Heap connection names;
    with no Heap connection defined, for any app, and the log says so. A real run into another app
    sends everything again (Heap accepts any app id silently)."""
    caplog.set_level("INFO")
    assert operator().execute(context())["sent"] == 5  # into test-app
    dry = operator().execute(context(dry_run=True))
    assert (dry["sent"], dry["already_sent"], dry["app_id"]) == (0, 5, "test-app")
    point_heap_at(heap_connection, monkeypatch, "other-app")
    dry = operator().execute(context(dry_run=True))
    assert (dry["sent"], dry["already_sent"], dry["app_id"]) == (5, 0, "other-app")
    monkeypatch.delenv("AIRFLOW_CONN_HEAP_DEFAULT")
    dry = operator().execute(context(dry_run=True))
    assert (dry["sent"], dry["already_sent"], dry["app_id"]) == (0, 5, None)
    assert "already sent: what the ledger holds for any Heap app (no app id given)" in caplog.text
    point_heap_at(heap_connection, monkeypatch, "other-app")
    summary = operator().execute(context())
    assert (summary["sent"], summary["already_sent"], summary["app_id"]) == (5, 0, "other-app")
    assert {e["app_id"] for e in received(heap_connection)} == {"test-app", "other-app"}


@pytest.mark.parametrize(("timeout", "status"), [(None, "running"), ("60", "abandoned")])
def test_a_dead_tries_run_record_is_abandoned_after_airflows_task_heartbeat_timeout(
    heap_connection: HeapEmulator, monkeypatch: pytest.MonkeyPatch, timeout: str | None, status: str
) -> None:
    """A try that died two minutes ago left its record ``running``: the next try marks it
    ``abandoned`` once it is older than ``[scheduler] task_instance_heartbeat_timeout`` (Airflow's
    default 300 s leaves it alone; 60 s does not)."""
    if timeout is not None:
        monkeypatch.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT", timeout)
    dead = Ledger.sqlite(str(default_ledger_path()), clock=lambda: time.time() - 120)
    dead.runs.start("p", DAY, "manual__test")
    dead.close()
    operator().execute(context())
    assert [r["status"] for r in run_records(ledger(), "p")] == ["success", status]


@pytest.mark.parametrize(
    ("connection", "problem"),
    [
        (None, r"Heap connection 'heap_default' is not defined \(or could not be read\)"),
        ({"conn_type": "heap", "host": "http://heap.example.com", "login": "app"}, r"refusing plain http"),
        ({"conn_type": "heap", "host": "https://heapanalytics.com"}, r"the Heap app_id .* is empty"),
        (
            {"conn_type": "heap", "login": "app", "extra": {"regoin": "eu"}},
            r"unknown extra keys \['regoin'\]",
        ),
        (
            {"conn_type": "heap", "login": "app", "extra": {"read_timeout": [5]}},
            r"'read_timeout' must be a number",
        ),
        (
            {"conn_type": "heap", "login": "app", "extra": {"max_batch_events": "x"}},
            r"'max_batch_events' must be",
        ),
        (
            {"conn_type": "heap", "host": "https://app:S3cret@heapanalytics.com", "login": "app"},
            r"'https://heapanalytics.com' \(credentials removed\) must hold no user or password",
        ),
    ],
)
def test_a_missing_or_unusable_heap_connection_fails_at_once_saying_how_to_fix_it(
    emulator: HeapEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    connection: dict[str, Any] | None,
    problem: str,
) -> None:
    """No retry (AirflowFailException), no stack trace of a lookup: the connection id, what is wrong,
    and the three ways to define it with the fields it needs."""
    monkeypatch.setenv("WALKME_HEAP_HOME", str(tmp_path / "walkme_heap"))
    if connection is None:
        monkeypatch.delenv("AIRFLOW_CONN_HEAP_DEFAULT", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW_CONN_HEAP_DEFAULT", json.dumps(connection))
    with pytest.raises(AirflowFailException, match=problem) as failure:
        operator().execute(context())
    message = str(failure.value)
    assert message.startswith("pipeline 'p': ") and "nothing was sent" in message
    assert "S3cret" not in message
    for way in (
        "Admin > Connections",
        "airflow connections add heap_default --conn-type heap --conn-host https://heapanalytics.com "
        "--conn-login <your Heap app id>",
        """AIRFLOW_CONN_HEAP_DEFAULT='{"conn_type": "heap", "host": "https://heapanalytics.com", "login": """,
    ):
        assert way in message
    assert stats(emulator).get("requests", 0) == 0
    assert not (tmp_path / "walkme_heap" / "dead_letters").exists()


def test_a_dry_run_packs_with_the_connections_batch_caps_as_the_real_run_does(
    heap_connection: HeapEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The connection's ``max_batch_bytes`` decides which events are too large for any request: a
    dry run counts them as the real run will (``event_too_large``), not as sent."""
    with open(DAY_FILE.format(date=datetime(2024, 3, 10)), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    big = {**rows[0], "wm_euId": "big-user", "sId": "s-big", "ctx.title": "x" * 1000}
    with (tmp_path / "walkme_webhooks_2024-03-10.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([*rows, big])
    point_heap_at(heap_connection, monkeypatch, max_batch_bytes=1024)
    source = {"path": str(tmp_path / "walkme_webhooks_{date:%Y-%m-%d}.csv")}
    dry = operator(source=source).execute(context(dry_run=True))
    real = operator(source=source).execute(context())
    assert real["invalid_by_reason"].get("event_too_large") == 1 and real["sent"] > 0
    assert (dry["sent"], dry["invalid_by_reason"]) == (real["sent"], real["invalid_by_reason"])
