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


def test_the_task_that_ends_the_window_declares_the_pipelines_asset() -> None:
    """One replay task: it has the outlet. Sharded: the day's summary task has it (it runs once every
    shard is in Heap), the mapped shards have none (Airflow would emit an event per shard)."""
    from walkme_heap.assets import pipeline_asset

    dags = build_dags(DATA / "e2e" / "pipelines.yaml")
    plain = dags["walkme_to_heap_e2e"]
    assert plain.get_task("replay").outlets == [pipeline_asset("e2e", "heap_default")]
    sharded = dags["walkme_to_heap_e2e_sharded"]
    assert sharded.get_task("summary").outlets == [pipeline_asset("e2e_sharded")]
    assert list(sharded.get_task("replay").outlets) == []
    (outlet,) = plain.get_task("replay").outlets
    assert (outlet.name, outlet.uri) == ("walkme_heap.e2e", "walkme-heap://heap_default/e2e")


def test_the_pipelines_asset_names_its_heap_connection(tmp_path: Path) -> None:
    config = tmp_path / "pipelines.yaml"
    config.write_text(
        "pipelines:\n  eu:\n    start_date: 2024-03-10\n    heap_conn_id: heap_eu\n"
        f"    source: {{path: {tmp_path}/x.csv}}\n"
    )
    (outlet,) = build_dags(config)["walkme_to_heap_eu"].get_task("replay").outlets
    assert outlet.uri == "walkme-heap://heap_eu/eu" and outlet.name == "walkme_heap.eu"


def test_downstream_dags_on_the_pipelines_assets_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The downstream example (one DAG per pipeline, scheduled on its asset) and the
    example that replays a pipeline when its upstream export lands parse with the project's DAGs."""
    from airflow.dag_processing.dagbag import DagBag

    from walkme_heap.assets import pipeline_asset

    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(DATA / "e2e" / "pipelines.yaml"))
    bag = DagBag(dag_folder=str(DATA / "assets"))
    assert bag.import_errors == {}
    downstream = bag.dags["heap_day_e2e"]
    assert downstream.timetable.asset_condition == pipeline_asset("e2e", "heap_default")
    assert "heap_day_e2e_sharded" in bag.dag_ids
    examples = DagBag(dag_folder=str(ROOT / "include" / "examples"))
    assert examples.import_errors == {}
    assert set(examples.dag_ids) == {"replay_sample_webhooks_on_export"}


def test_the_upstream_export_example_triggers_one_replay_per_exported_day() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "replay_on_upstream_export", ROOT / "include" / "examples" / "replay_on_upstream_export.py"
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    extras = [{"day": "2024-03-11"}, {"day": "2024-03-10"}, {"day": "2024-03-11"}, {"rows": 3}]
    assert example.replay_requests(extras) == [
        {"trigger_run_id": "export__2024-03-10", "conf": {"start": "2024-03-10", "end": "2024-03-11"}},
        {"trigger_run_id": "export__2024-03-11", "conf": {"start": "2024-03-11", "end": "2024-03-12"}},
    ]
