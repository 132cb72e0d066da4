"""``on_missing: wait``: a sensor in reschedule mode waits for a day's export before the replay, and
fails loudly after its timeout (reports land hours after their day)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.helpers import DATA, ROOT, received
from walkme_heap.config import ConfigError, parse_pipeline
from walkme_heap.dag_factory import build_dag
from walkme_heap.emulator import HeapEmulator
from walkme_heap.operators.sensor import WalkMeExportSensor

DAY_RUN = datetime(2024, 3, 11, tzinfo=UTC)  # the daily run for 2024-03-10


def context() -> dict[str, Any]:
    return {
        "params": {},
        "data_interval_start": datetime(2024, 3, 10, tzinfo=UTC),
        "data_interval_end": datetime(2024, 3, 11, tzinfo=UTC),
    }


def sensor(source: dict[str, Any], tmp_path: Path) -> WalkMeExportSensor:
    return WalkMeExportSensor(task_id="wait", pipeline="p", source=source, config_dir=str(tmp_path))


def test_the_sensor_waits_until_the_days_file_is_there_and_not_empty(tmp_path: Path) -> None:
    waiting = sensor({"type": "csv", "path": "report_{date:%Y-%m-%d}.csv", "on_missing": "wait"}, tmp_path)
    assert waiting.mode == "reschedule"  # no worker slot held between looks
    assert waiting.poke(context()) is False  # not there yet
    (tmp_path / "report_2024-03-10.csv").write_bytes(b"")
    assert waiting.poke(context()) is False  # still being written
    (tmp_path / "report_2024-03-10.csv").write_text("wm.euId,created_at\n")
    assert waiting.poke(context()) is True


def test_a_source_that_cannot_be_used_fails_at_once_instead_of_waiting(tmp_path: Path) -> None:
    with pytest.raises(AirflowFailException, match="path template"):
        sensor({"type": "csv", "path": "report_{day}.csv", "on_missing": "wait"}, tmp_path).poke(context())


def test_the_dag_waits_before_replaying_with_the_pipelines_poke_and_timeout(tmp_path: Path) -> None:
    data = {
        "start_date": "2024-03-10",
        "source": {"path": "r_{date:%Y-%m-%d}.csv", "on_missing": "wait", "wait_timeout": "6 hours"},
    }
    dag = build_dag(parse_pipeline("reports", data, "test", tmp_path))
    wait = dag.get_task("wait_for_export")
    assert isinstance(wait, WalkMeExportSensor)
    assert (wait.mode, wait.poke_interval, wait.timeout, wait.retries) == ("reschedule", 300, 6 * 3600, 0)
    assert dag.get_task("replay").upstream_task_ids == {"wait_for_export"}
    sharded = build_dag(parse_pipeline("reports", {**data, "shards": 2}, "test", tmp_path))
    assert sharded.get_task("replay").upstream_task_ids == {"wait_for_export"}
    plain = build_dag(parse_pipeline("reports", {**data, "source": {"path": "r.csv"}}, "test", tmp_path))
    assert "wait_for_export" not in plain.task_ids


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"path": "r.csv", "wait_timeout": "1 hour"}, "applies with on_missing: wait"),
        ({"path": "r.csv", "on_missing": "wait", "wait_poke": 0}, "must not be 0"),
        ({"path": "r.csv", "on_missing": "wait", "wait_timeout": "8 days"}, "at most 7 days"),
        ({"path": "r.csv", "on_missing": "later"}, "on_missing"),
    ],
)
def test_wait_settings_are_checked(source: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_pipeline("p", {"start_date": "2024-03-10", "source": source}, "test", tmp_path)


@pytest.mark.e2e
def test_a_waiting_pipeline_replays_its_day_once_the_export_is_there(
    airflow_db: Path, heap_connection: HeapEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devtools.local_run import run_dag

    shutil.copy(DATA / "e2e" / "walkme_webhooks_2024-03-10.csv", tmp_path / "walkme_webhooks_2024-03-10.csv")
    config = tmp_path / "pipelines.yaml"
    config.write_text(
        "pipelines:\n  waits:\n    start_date: 2024-03-10\n    retries: 0\n    max_invalid_ratio: 0.5\n"
        "    source:\n      path: walkme_webhooks_{date:%Y-%m-%d}.csv\n      on_missing: wait\n"
        "    mapping:\n      event_name: {event_type: complete}\n      properties: {exclude: [oType]}\n"
    )
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(config))
    result = run_dag(ROOT / "dags", "walkme_to_heap_waits", DAY_RUN, None)
    assert result.state == "success" and result.summary is not None
    assert result.summary["sent"] == len(received(heap_connection)) == 6
