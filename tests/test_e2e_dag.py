"""End to end: the real DAG, run by Airflow (``dag.test()``), against the Heap emulator over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from devtools.local_run import DagTestResult, run_dag
from tests.helpers import DATA, ROOT, received
from walkme_heap.emulator import HeapEmulator

pytestmark = pytest.mark.e2e

DAY_RUN = datetime(2024, 3, 11, tzinfo=UTC)  # the daily run for 2024-03-10 covers [03-10, 03-11)

EXPECTED = [
    {
        "app_id": "test-app",
        "identity": "u-alice",
        "event": "WalkMe Walk-Thru Started",
        "timestamp": "2024-03-10T00:00:00.000+00:00",
        "idempotency_key": "wmh1-5a6769b33b471622e3d23590eaeff4bd",
        "properties": {
            "type": "play",
            "oId": "152605",
            "oName": "Deploy Apps",
            "sId": "s-1",
            "ctx.title": "Home",
            "wm.userVars.plan": "enterprise",
        },
    },
    {
        "app_id": "test-app",
        "identity": "u-bob",
        "event": "WalkMe Walk-Thru Goal Reached",
        "timestamp": "2024-03-10T23:59:59.999+00:00",
        "idempotency_key": "wmh1-cbdbf71c3ccfa9407a34361381f1a79e",
        "properties": {
            "type": "goalReach",
            "oId": "152605",
            "oName": "Deploy Apps",
            "sId": "s-2",
            "ctx.title": "Line1\nLine2",
        },
    },
    {
        "app_id": "test-app",
        "identity": "u-grace",
        "event": "WalkMe Survey Submitted",
        "timestamp": "2024-03-10T08:40:00.000+00:00",
        "idempotency_key": "wmh1-6a6575f8d8615de24e2dcccf591d044d",
        "properties": {
            "type": "submitted",
            "oId": "7731",
            "oName": "How easy?",
            "sId": "s-4",
            "value": "9",
            "ctx.title": "日本語タイトル",
        },
    },
    {  # 23:59:59.999 of the day before, filed with this day: a late event, within the default 2 days
        "app_id": "test-app",
        "identity": "u-dave",
        "event": "WalkMe ShoutOut Displayed",
        "timestamp": "2024-03-09T23:59:59.999+00:00",
        "idempotency_key": "wmh1-c65f1b466ca27d0f40e9935b77d5c845",
        "properties": {"type": "play", "oId": "88121", "oName": "Promo", "sId": "s-8", "ctx.title": "Home"},
    },
    {
        "app_id": "test-app",
        "identity": "u-heidi",
        "event": "WalkMe Onboarding Task Completed",
        "timestamp": "2024-03-10T11:26:40.000+00:00",
        "idempotency_key": "wmh1-685cbaf40d6941fb14c9573923661923",
        "properties": {"oId": "9102", "oName": "Profile", "sId": "s-5"},
    },
    {
        "app_id": "test-app",
        "identity": "u-ivan",
        "event": "WalkMe Launcher Clicked",
        "timestamp": "2024-03-10T14:13:20.000+00:00",
        "idempotency_key": "wmh1-b44218476c9e30e9a57a08495f20cfcb",
        "properties": {"type": "click", "oId": "40977", "oName": "Help", "sId": "s-6"},
    },
]


@pytest.fixture
def e2e(airflow_db: Path, heap_connection: HeapEmulator, monkeypatch: pytest.MonkeyPatch) -> HeapEmulator:
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(DATA / "e2e" / "pipelines.yaml"))
    return heap_connection


def run(dag: str, logical_date: datetime = DAY_RUN, conf: dict | None = None) -> DagTestResult:
    return run_dag(ROOT / "dags", f"walkme_to_heap_{dag}", logical_date, conf)


def by_key(events: list[dict]) -> list[dict]:
    return sorted(events, key=lambda e: e["idempotency_key"])


def stats(emulator: HeapEmulator) -> dict:
    return requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()


def test_replays_one_day_exactly(e2e: HeapEmulator, capfd: pytest.CaptureFixture[str]) -> None:
    result = run("e2e")
    output = capfd.readouterr()
    assert result.state == "success", output.out[-3000:]
    assert by_key(received(e2e)) == by_key(EXPECTED)
    summary = result.summary
    assert summary is not None
    assert (summary["read"], summary["sent"], summary["batches"]) == (10, 6, 1)
    assert summary["late_events"] == 1  # 23:59:59.999 of the day before, filed with this day
    assert summary["invalid_by_reason"] == {"missing_identity": 1, "unparsable_time": 1}
    assert summary["skipped_by_reason"] == {"non_production": 1, "outside_window": 1}
    assert summary["read"] == summary["sent"] + summary["invalid"] + summary["skipped"]
    assert summary["window"] == {"start": "2024-03-10T00:00:00+00:00", "end": "2024-03-11T00:00:00+00:00"}
    assert result.links == {"ReplayReportLink": "/walkme-heap/report?pipeline=e2e&day=2024-03-10"}
    for identity in ("u-alice", "u-bob", "u-dave", "u-grace", "u-heidi", "u-ivan"):
        assert identity not in output.out + output.err, "identities must not reach the logs"


def test_running_the_same_day_again_sends_nothing(e2e: HeapEmulator) -> None:
    assert run("e2e").state == "success"
    again = run("e2e")
    assert again.state == "success" and again.summary is not None
    assert (again.summary["sent"], again.summary["already_sent"]) == (0, 6)
    counts = stats(e2e)
    assert (counts["unique_events"], counts["duplicate_events"], counts["requests"]) == (6, 0, 1)
    assert by_key(received(e2e)) == by_key(EXPECTED)


def test_force_sends_the_day_again_and_heap_drops_the_repeats(e2e: HeapEmulator) -> None:
    assert run("e2e").state == "success"
    forced = run("e2e", conf={"force": True})
    assert forced.state == "success" and forced.summary is not None
    assert (forced.summary["sent"], forced.summary["already_sent"], forced.summary["force"]) == (6, 0, True)
    counts = stats(e2e)
    assert (counts["unique_events"], counts["duplicate_events"]) == (6, 6)


def test_dry_run_sends_nothing(e2e: HeapEmulator) -> None:
    result = run("e2e", conf={"dry_run": True})
    assert result.state == "success" and result.summary is not None
    assert result.summary["dry_run"] is True and result.summary["sent"] == 6
    assert stats(e2e).get("requests", 0) == 0


def test_a_ui_range_replays_each_day_file(e2e: HeapEmulator) -> None:
    result = run("e2e_skip_missing", conf={"start": "2024-03-09", "end": "2024-03-12"})
    assert result.state == "success" and result.summary is not None
    assert result.summary["origins"] == 1  # 03-09 and 03-11 have no file and are skipped
    assert (result.summary["read"], result.summary["sent"]) == (10, 7)  # both late rows now fit


def test_invalid_range_fails_before_reading(e2e: HeapEmulator, capfd: pytest.CaptureFixture) -> None:
    result = run("e2e", conf={"start": "2024-03-12", "end": "2024-03-10"})
    assert result.state == "failed"
    out = capfd.readouterr().out
    assert "AirflowFailException: pipeline 'e2e': window end 2024-03-10T00:00:00Z must be after" in out
    assert stats(e2e).get("requests", 0) == 0


def test_missing_day_file_fails_with_nothing_sent(e2e: HeapEmulator, capfd: pytest.CaptureFixture) -> None:
    result = run("e2e", logical_date=datetime(2024, 3, 12, tzinfo=UTC))
    assert result.state == "failed"
    out = capfd.readouterr().out
    assert "SourceMissingError: pipeline 'e2e': no file for 2024-03-11 at " in out  # retryable
    assert stats(e2e).get("requests", 0) == 0


def test_missing_columns_fail_before_anything_is_sent(
    e2e: HeapEmulator, capfd: pytest.CaptureFixture
) -> None:
    result = run("e2e_bad_columns")
    assert result.state == "failed"
    assert "missing required columns: identity (looked for Customer Key)" in capfd.readouterr().out
    assert stats(e2e).get("requests", 0) == 0


def test_an_event_heap_refuses_is_isolated_and_dead_lettered(e2e: HeapEmulator, tmp_path: Path) -> None:
    requests.post(f"{e2e.url}/_emulator/config", json={"poison": "u-grace"}, timeout=5)
    result = run("e2e")
    assert result.state == "success" and result.summary is not None
    assert (result.summary["sent"], result.summary["rejected"]) == (5, 1)
    assert {e["identity"] for e in received(e2e)} == {"u-alice", "u-bob", "u-dave", "u-heidi", "u-ivan"}
    letters = [json.loads(line) for line in Path(result.summary["dead_letters"]).read_text().splitlines()]
    rejected = [d for d in letters if d["outcome"] == "rejected"]
    assert len(rejected) == 1 and rejected[0]["payload"]["identity"] == "u-grace"
    assert "was rejected (poisoned event)" in rejected[0]["message"]
    assert sorted(d["reason"] for d in letters if d["outcome"] == "invalid") == [
        "missing_identity",
        "unparsable_time",
    ]


def test_object_storage_path_with_a_connection(
    e2e: HeapEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "pipelines.yaml"
    config.write_text(
        "pipelines:\n  remote:\n    start_date: 2024-03-10\n    retries: 0\n    max_invalid_ratio: 0.5\n"
        "    source:\n"
        f"      path: file://{DATA}/e2e/walkme_*_{{date:%Y-%m-%d}}.csv\n      conn_id: local_fs\n"
        "    mapping:\n      event_name: {event_type: complete}\n      properties: {exclude: [oType]}\n"
    )
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(config))
    monkeypatch.setenv("AIRFLOW_CONN_LOCAL_FS", '{"conn_type": "fs"}')
    result = run("remote")
    assert result.state == "success"
    assert by_key(received(e2e)) == by_key(EXPECTED)


@pytest.mark.parametrize("dag", ["e2e_templated", "e2e_templated_sharded"])
def test_a_templated_source_path_is_rendered_for_the_run(e2e: HeapEmulator, dag: str) -> None:
    """``{{ data_interval_start... }}`` in the path, in one task and in each mapped shard."""
    result = run(dag)
    assert result.state == "success" and result.summary is not None
    assert (result.summary["read"], result.summary["sent"]) == (10, 6)
    assert by_key(received(e2e)) == by_key(EXPECTED)


def test_a_trial_run_with_a_row_limit(e2e: HeapEmulator) -> None:
    result = run("e2e", conf={"limit": 3})
    assert result.state == "success" and result.summary is not None
    assert result.summary["read"] == 3 and stats(e2e)["unique_events"] == result.summary["sent"] == 2


def test_a_sharded_day_runs_as_mapped_tasks_and_adds_up(e2e: HeapEmulator) -> None:
    """Three mapped replay tasks (one per shard) and a summary task; the day is replayed exactly."""
    from walkme_heap.dag_factory import build_dags

    dag = build_dags(DATA / "e2e" / "pipelines.yaml")["walkme_to_heap_e2e_sharded"]
    assert dag.get_task("summary").upstream_task_ids == {"replay"}
    result = run("e2e_sharded")
    assert result.state == "success"
    assert by_key(received(e2e)) == by_key([{**e} for e in EXPECTED])
    summary = result.summary
    assert summary is not None and summary["shard"] == "3 shards"
    assert (summary["read"], summary["sent"]) == (10, 6)
    assert summary["invalid_by_reason"] == {"missing_identity": 1, "unparsable_time": 1}
    assert summary["skipped_by_reason"] == {"non_production": 1, "outside_window": 1}
    again = run("e2e_sharded")
    assert again.summary is not None and (again.summary["sent"], again.summary["already_sent"]) == (0, 6)
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        names = {
            ti.map_index: ti.rendered_map_index
            for ti in session.query(TaskInstance).filter(
                TaskInstance.dag_id == "walkme_to_heap_e2e_sharded",
                TaskInstance.run_id == again.run_id,
                TaskInstance.task_id == "replay",
            )
        }
    assert names == {0: "shard 1 of 3", 1: "shard 2 of 3", 2: "shard 3 of 3"}  # as the UI lists them


def test_a_run_without_a_heap_connection_fails_once_saying_how_to_define_it(
    e2e: HeapEmulator, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """AirflowFailException: one try, though the pipeline allows two retries without delay."""
    monkeypatch.delenv("AIRFLOW_CONN_HEAP_DEFAULT")
    result = run("e2e_retried")
    assert result.state == "failed"
    out = capfd.readouterr().out
    message = "Heap connection 'heap_default' is not defined (or could not be read); nothing was sent"
    assert f"AirflowFailException: pipeline 'e2e_retried': {message}" in out
    assert "AirflowNotFoundException" not in out  # not the lookup's stack trace
    assert "airflow connections add heap_default --conn-type heap" in out
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tries = (
            session.query(TaskInstance.try_number, TaskInstance.state)
            .filter(TaskInstance.dag_id == "walkme_to_heap_e2e_retried", TaskInstance.task_id == "replay")
            .all()
        )
    assert [(t, str(s)) for t, s in tries] == [(1, "failed")]
    assert out.count(message) == 1
    assert stats(e2e).get("requests", 0) == 0
