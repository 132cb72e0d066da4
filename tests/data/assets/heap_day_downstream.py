"""Downstream DAGs: for each pipeline, ``heap_day_<pipeline>`` runs once the pipeline's window is in Heap.

Scheduled on the pipeline's asset itself (``pipeline_asset``: its name and URI). Not on
``Asset.ref(name=...)``: Airflow 3.3 starts such a DAG on the asset's events but hands its run none
of them (``triggering_asset_events`` is empty; seen under the real scheduler). Its one task returns
the extras of the asset events that started the run: which window reached which Heap app, with the
counts. Dropped into a DAGs folder next to the project's DAG file and pipelines.yaml (the tests'
real-scheduler deployment), it is the consumer to assert on.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task

from walkme_heap.assets import pipeline_asset
from walkme_heap.config import load_pipelines


@task
def windows_in_heap(*, triggering_asset_events: Any = None) -> list[dict[str, Any]]:
    """The windows now in Heap: the extras of the events that started this run, oldest first."""
    return [dict(event.extra) for events in (triggering_asset_events or {}).values() for event in events]


for _pipeline in load_pipelines():
    with DAG(
        dag_id=f"heap_day_{_pipeline.name}",
        description=f"Runs when a window of pipeline '{_pipeline.name}' is in Heap",
        schedule=pipeline_asset(_pipeline.name, _pipeline.heap_conn_id),
        start_date=_pipeline.start_date,
        catchup=False,
        is_paused_upon_creation=False,
        tags=["walkme", "heap", "downstream"],
    ) as _dag:
        windows_in_heap()
    globals()[_dag.dag_id] = _dag
