"""OpenLineage: the replay task's facets as the OpenLineage provider asks for them (its extractor
manager calls ``get_openlineage_facets_on_complete`` / ``_on_failure`` after the task), and through
the provider's listener in a real DAG run. Nothing is sent anywhere: the one emitting test writes
events to a file through OpenLineage's file transport; the others emit nothing (no transport is
configured, so the provider is disabled)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from airflow.providers.common.compat.openlineage.facet import (
    Dataset,
    OutputDataset,
    OutputStatisticsOutputDatasetFacet,
)
from airflow.providers.openlineage.extractors import OperatorLineage
from airflow.providers.openlineage.extractors.manager import ExtractorManager
from airflow.sdk.exceptions import AirflowFailException
from airflow.utils.state import TaskInstanceState
from openlineage.client.serde import Serde

from devtools.sample_warehouse import load_sqlite, payloads
from tests.helpers import DATA, DAY, ROOT
from walkme_heap.emulator import HeapEmulator
from walkme_heap.operators.lineage import file_dataset_id, heap_dataset_id, sql_lineage
from walkme_heap.operators.replay import WalkMeToHeapOperator

DAY_FILE = DATA / "e2e" / "walkme_webhooks_2024-03-10.csv"
MAPPING = {"event_name": {"event_type": "complete"}, "properties": {"exclude": ["oType"]}}


def context(**params: Any) -> dict[str, Any]:
    return {
        "params": params,
        "data_interval_start": DAY.start,
        "data_interval_end": DAY.end,
        "run_id": "manual__test",
    }


def replay_task(**arguments: Any) -> WalkMeToHeapOperator:
    settings = {
        "source": {"path": str(DATA / "e2e" / "walkme_webhooks_{date:%Y-%m-%d}.csv")},
        "mapping": MAPPING,
        "max_invalid_ratio": 0.5,
        **arguments,
    }
    return WalkMeToHeapOperator(task_id="replay", pipeline="p", **settings)


def heap_app(emulator: HeapEmulator, sent: int) -> OutputDataset:
    host = emulator.url.split("://", 1)[1]
    statistics = OutputStatisticsOutputDatasetFacet(rowCount=sent)
    return OutputDataset(
        namespace=f"heap://{host}", name="test-app", outputFacets={"outputStatistics": statistics}
    )


def extracted(task: WalkMeToHeapOperator, state: TaskInstanceState) -> OperatorLineage:
    """The lineage the provider's extractor manager takes from the task, as its listener does."""
    return ExtractorManager().extract_metadata(mock.MagicMock(run_id="r"), task, state, mock.MagicMock())


# -- names ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/data/walkme/2024-03-10.csv", ("file", "/data/walkme/2024-03-10.csv")),
        ("file:///data/walkme/2024-03-10.csv", ("file", "/data/walkme/2024-03-10.csv")),
        ("s3://exports/walkme/2024/03/10/a.csv.gz", ("s3://exports", "walkme/2024/03/10/a.csv.gz")),
        ("s3a://exports/a.csv", ("s3://exports", "a.csv")),
        ("gs://exports/a.jsonl", ("gs://exports", "a.jsonl")),
        ("gcs://exports/a.jsonl", ("gs://exports", "a.jsonl")),
        ("abfs://container/walkme/a.csv", ("abfs://container", "walkme/a.csv")),
    ],
)
def test_files_are_named_as_openlineage_names_them(url: str, expected: tuple[str, str]) -> None:
    assert file_dataset_id(url) == expected


def test_a_heap_app_is_named_by_its_api_host_and_app_id() -> None:
    assert heap_dataset_id("https://heapanalytics.com", "1234") == ("heap://heapanalytics.com", "1234")
    assert heap_dataset_id("https://c.eu.heap-api.com/", "9") == ("heap://c.eu.heap-api.com", "9")


# -- after a run ----------------------------------------------------------------------------------------
def test_a_run_reports_the_days_file_and_the_heap_app_with_the_events_sent(
    heap_connection: HeapEmulator,
) -> None:
    task = replay_task()
    assert task.execute(context())["sent"] == 5
    expected = OperatorLineage(
        inputs=[Dataset(namespace="file", name=str(DAY_FILE))], outputs=[heap_app(heap_connection, 5)]
    )
    assert task.get_openlineage_facets_on_complete(mock.MagicMock()) == expected
    assert extracted(task, TaskInstanceState.SUCCESS) == expected  # the provider's own extraction
    event_part = Serde.to_dict(expected.outputs[0])  # what the listener serialises
    assert event_part["outputFacets"]["outputStatistics"]["rowCount"] == 5


def test_a_run_that_sent_nothing_new_still_writes_the_heap_app(heap_connection: HeapEmulator) -> None:
    """The second run of a day: every event already sent; the job still feeds the app (count 0)."""
    replay_task().execute(context())
    task = replay_task()
    assert task.execute(context())["already_sent"] == 5
    assert task.get_openlineage_facets_on_complete(mock.MagicMock()).outputs == [heap_app(heap_connection, 0)]


def test_a_dry_run_reports_what_it_read_and_no_output(heap_connection: HeapEmulator) -> None:
    task = replay_task()
    task.execute(context(dry_run=True))
    lineage = task.get_openlineage_facets_on_complete(mock.MagicMock())
    assert lineage.inputs == [Dataset(namespace="file", name=str(DAY_FILE))] and lineage.outputs == []


def test_a_failed_run_reports_what_reached_heap_before_it_stopped(heap_connection: HeapEmulator) -> None:
    """Too many invalid rows fail the task after every valid event was sent: 5 reached Heap."""
    task = replay_task(max_invalid_ratio=0.1)
    with pytest.raises(AirflowFailException, match="over max_invalid_ratio"):
        task.execute(context())
    expected = OperatorLineage(
        inputs=[Dataset(namespace="file", name=str(DAY_FILE))], outputs=[heap_app(heap_connection, 5)]
    )
    assert task.get_openlineage_facets_on_failure(mock.MagicMock()) == expected
    assert extracted(task, TaskInstanceState.FAILED) == expected


def test_a_task_that_failed_before_opening_its_source_reports_nothing(heap_connection: HeapEmulator) -> None:
    task = replay_task()
    with pytest.raises(AirflowFailException, match="param 'limit'"):
        task.execute(context(limit="many"))
    assert task.get_openlineage_facets_on_failure(mock.MagicMock()) == OperatorLineage()


def test_a_sql_source_reports_its_table_named_through_its_connection(
    heap_connection: HeapEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = load_sqlite(tmp_path / "warehouse.db", payloads()[:20])
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(warehouse)}))
    source = {
        "type": "sql",
        "conn_id": "warehouse",
        "table": "walkme_events",
        "time_column": "created_at",
        "time_type": "epoch_ms",
        "payload_column": "payload",
    }
    task = replay_task(source=source, max_invalid_ratio=1.0)
    task.execute(context(dry_run=True))
    lineage = task.get_openlineage_facets_on_complete(mock.MagicMock())
    # SQLite's hook does not describe itself to OpenLineage: its type and file, schema "main"
    assert lineage.inputs == [Dataset(namespace=f"sqlite://{warehouse}", name="main.walkme_events")]
    assert ":window_start" in lineage.job_facets["sql"].query  # the query the task ran


def test_a_postgres_table_and_query_file_are_named_as_common_sql_names_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Named by the Postgres hook and the provider's SQL parser: ``postgres://host:port``,
    ``database.schema.table`` (the hook's current schema for an unqualified table; no server here)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgresql://reader@db.example:5432/warehouse")
    monkeypatch.setattr(PostgresHook, "get_openlineage_default_schema", lambda self: "public")
    query = (ROOT / "include" / "sql" / "walkme_events_postgres.sql").read_text()
    assert sql_lineage("warehouse", query).inputs == [
        Dataset(namespace="postgres://db.example:5432", name="warehouse.public.walkme_events")
    ]
    table = "SELECT * FROM walkme.events WHERE created_at >= :window_start AND created_at < :window_end"
    assert sql_lineage("warehouse", table).inputs == [
        Dataset(namespace="postgres://db.example:5432", name="warehouse.walkme.events")
    ]


def test_an_unreachable_database_costs_only_the_sql_input(
    heap_connection: HeapEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from walkme_heap.operators import lineage

    warehouse = load_sqlite(tmp_path / "warehouse.db", payloads()[:20])
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(warehouse)}))
    source = {"type": "sql", "conn_id": "warehouse", "table": "walkme_events", "time_column": "created_at"}
    task = replay_task(source={**source, "time_type": "epoch_ms", "payload_column": "payload"})
    task.execute(context(dry_run=True))

    def unreachable(conn_id: str, query: str) -> OperatorLineage:
        raise ConnectionError("no route to host")

    monkeypatch.setattr(lineage, "sql_lineage", unreachable)
    assert task.get_openlineage_facets_on_complete(mock.MagicMock()) == OperatorLineage()


# -- without the provider, and through its listener ---------------------------------------------------
def test_the_operator_works_without_the_openlineage_provider(tmp_path: Path) -> None:
    """The provider is optional: DAGs parse and a run works with its modules unimportable; only the
    provider's own call (which cannot happen then) needs it."""
    code = f"""
import sys
from airflow.providers_manager import ProvidersManager
from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
ProvidersManager().initialize_providers_list()  # discovered while its package can still be read
ProvidersManagerTaskRuntime().initialize_providers_list()
for name in list(sys.modules):
    if name.startswith(("airflow.providers.openlineage", "openlineage")):
        del sys.modules[name]
for name in ("airflow.providers.openlineage", "openlineage"):
    sys.modules[name] = None  # importing it fails, as if it were not installed
from datetime import UTC, datetime
from walkme_heap.dag_factory import build_dags

class TaskInstance:
    def xcom_push(self, key, value):
        print("pushed", key)

task = build_dags({str(DATA / "e2e" / "pipelines.yaml")!r})["walkme_to_heap_e2e"].get_task("replay")
context = {{"params": {{}}, "data_interval_start": datetime(2024, 3, 10, tzinfo=UTC),
           "data_interval_end": datetime(2024, 3, 11, tzinfo=UTC), "run_id": "m", "ti": TaskInstance()}}
task.dry_run = True
try:
    task.execute(context)
except Exception as exc:  # a dry run is not in Heap: skipped, no asset event
    print(type(exc).__name__)
try:
    task.get_openlineage_facets_on_complete(None)
except ImportError:
    print("lineage needs the provider")
"""
    env = {**os.environ, "WALKME_HEAP_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("AIRFLOW_CONN_HEAP_DEFAULT", None)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-3:] == [
        "pushed return_value",
        "AirflowSkipException",
        "lineage needs the provider",
    ], result.stdout[-3000:]


@pytest.mark.e2e
def test_the_providers_listener_emits_the_runs_lineage(
    airflow_db: Path, heap_connection: HeapEmulator, tmp_path: Path
) -> None:
    """A real DAG run (``dag.test()``) with OpenLineage on, its events written to a file (the
    ``file`` transport: nothing leaves the machine); a fresh process, as the provider reads its
    configuration once."""
    events = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WALKME_HEAP_CONFIG": str(DATA / "e2e" / "pipelines.yaml"),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",  # no fork in a test
    }
    code = (
        "from datetime import UTC, datetime\nfrom pathlib import Path\n"
        "from devtools.local_run import run_dag\n"
        f"result = run_dag(Path({str(ROOT / 'dags')!r}), 'walkme_to_heap_e2e', "
        "datetime(2024, 3, 11, tzinfo=UTC))\n"
        "print('STATE', result.state)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert "STATE success" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    emitted = [json.loads(line) for line in events.read_text().splitlines()]
    (complete,) = [
        e for e in emitted if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(".replay")
    ]
    assert complete["inputs"] == [{"namespace": "file", "name": str(DAY_FILE), "facets": {}}]
    (output,) = complete["outputs"]
    host = heap_connection.url.split("://", 1)[1]
    assert (output["namespace"], output["name"]) == (f"heap://{host}", "test-app")
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 6
