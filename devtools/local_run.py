"""Run a pipeline's DAG in this process with ``dag.test()`` (the demo and end-to-end tests).

Needs an initialised Airflow metadata database (``airflow db migrate``); the Heap connection can
come from an ``AIRFLOW_CONN_<ID>`` environment variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass
class DagTestResult:
    state: str
    run_id: str
    summary: dict[str, Any] | None
    links: dict[str, Any]  # operator extra links, as the task pushed them


def run_dag(
    dag_folder: Path | str,
    dag_id: str,
    logical_date: datetime,
    conf: dict[str, Any] | None = None,
) -> DagTestResult:
    """Run every task of one DAG run in-process; return its state and the replay summary."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=str(dag_folder))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise RuntimeError(f"no DAG {dag_id!r} in {dag_folder} (found {sorted(bag.dag_ids)})")
    run = dag.test(logical_date=logical_date, run_conf=conf or None)
    # A sharded pipeline's day is summed up by its "summary" task; its shards are mapped "replay"s.
    summary_task = "summary" if dag.has_task("summary") else "replay"
    with create_session() as session:
        rows = (
            session.query(XComModel)
            .filter(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id.in_(["replay", summary_task]),
            )
            .order_by(XComModel.map_index)
            .all()
        )
    summary = next((r.value for r in rows if r.task_id == summary_task and r.key == "return_value"), None)
    links = {
        r.key.removeprefix("_link_"): r.value
        for r in rows
        if r.task_id == "replay" and r.key.startswith("_link_")
    }
    return DagTestResult(state=str(run.state), run_id=run.run_id, summary=summary, links=links)
