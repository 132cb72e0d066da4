"""pipelines.yaml -> DAGs, the way Airflow parses them; bad configuration fails at parse time."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import DATA, ROOT
from walkme_heap.dag_factory import build_dags
from walkme_heap.operators.replay import WalkMeToHeapOperator


def dagbag(monkeypatch: pytest.MonkeyPatch, config: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(config))
    return DagBag(dag_folder=str(ROOT / "dags"))


def test_bundled_pipelines_become_dags(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = dagbag(monkeypatch, ROOT / "include" / "pipelines.yaml")
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "walkme_to_heap_sample_webhooks",
        "walkme_to_heap_sample_survey_report",
        "walkme_to_heap_sample_warehouse",
    }


def test_dag_shape() -> None:
    dag = build_dags(DATA / "e2e" / "pipelines.yaml")["walkme_to_heap_e2e"]
    from airflow.sdk import CronDataIntervalTimetable

    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.catchup is True and dag.max_active_runs == 1
    assert set(dag.params.keys()) == {"start", "end", "dry_run", "force", "limit"}
    assert dag.get_task("replay").pool == "heap_heap_default"
    task = dag.get_task("replay")
    assert isinstance(task, WalkMeToHeapOperator)
    assert task.heap_conn_id == "heap_default" and task.retries == 0
    assert set(WalkMeToHeapOperator.template_fields) == {"source", "dry_run", "force", "dead_letters"}


def test_bad_configuration_is_an_import_error_naming_pipeline_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "pipelines.yaml"
    bad.write_text(
        "pipelines:\n  p1:\n    start_date: 2024-03-10\n    source: {path: x.csv}\n"
        "    mapping: {preset: webhok}\n"
    )
    bag = dagbag(monkeypatch, bad)
    (message,) = bag.import_errors.values()
    assert "pipeline 'p1': key 'mapping.preset' must be one of webhook, report" in message


def test_bad_schedule_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "pipelines.yaml"
    bad.write_text(
        "pipelines:\n  p1:\n    start_date: 2024-03-10\n    schedule: every day\n    source: {path: x.csv}\n"
    )
    from walkme_heap.config import ConfigError

    with pytest.raises(ConfigError, match="pipeline 'p1': key 'schedule'"):
        build_dags(bad)


@pytest.mark.e2e
def test_the_demo_runs_and_proves_no_duplicate(airflow_db: Path) -> None:
    env = {**os.environ, "WALKME_HEAP_CONFIG": str(ROOT / "include" / "pipelines.yaml")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rows read          497" in result.stdout
    assert "events sent        0" in result.stdout  # the second run: the ledger knew everything
    # 5 events of 2024-03-09 filed with 2024-03-10 (late, within the default 2 days) are delivered
    assert "late, within bound 5" in result.stdout
    assert "after run 1: 486, after run 2: 486 -> no duplicate in Heap" in result.stdout


def _rendered(task: WalkMeToHeapOperator, day: str) -> WalkMeToHeapOperator:
    """The task as a run of ``day`` sees it once Airflow rendered its templates."""
    copy = task.prepare_for_execution()
    copy.render_template_fields({"data_interval_start": datetime.fromisoformat(day)})
    return copy


def test_rendering_a_run_leaves_the_parsed_dag_as_it_was() -> None:
    """Runs of two days from one parse (a worker reusing it, dag.test, mapped shards sharing their
    partial arguments) each get their own path; the DAG's spec keeps its template."""
    dags = build_dags(DATA / "e2e" / "pipelines.yaml")
    task = dags["walkme_to_heap_e2e_templated"].get_task("replay")
    mapped = dags["walkme_to_heap_e2e_templated_sharded"].get_task("replay")
    template = "walkme_webhooks_{{ data_interval_start.strftime('%Y-%m-%d') }}.csv"
    for day in ("2024-03-10", "2024-03-11"):
        for operator in (task, mapped.unmap({"shard": 1})):
            source = _rendered(operator, day).source
            assert source.located(source.path) == str(DATA / "e2e" / f"walkme_webhooks_{day}.csv")
    assert task.source.path == template and mapped.partial_kwargs["source"].path == template
