"""Replay a pipeline when its upstream export lands (an Airflow asset event), not on a clock.

Copy into the DAGs folder and set ``EXPORT`` and ``PIPELINE``; give the pipeline ``schedule: none``
in pipelines.yaml (it then runs only when triggered).

Why a second DAG: Airflow 3.3 gives an asset-triggered run no logical date and no data interval, so
a pipeline DAG scheduled on the export asset could not know which day to replay. The export's event
says it: its producer puts the day in the event's extra (``{"day": "2024-03-10"}``; agree on the key
with the team that owns the export). This DAG runs on those events and triggers the pipeline's DAG
once per day named, as a manual run with ``start`` / ``end``, the params a manual run replays. The
run id names the day, so an export landing again replays its day again (``reset_dag_run``): the
ledger makes that send only what Heap lacks.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Asset, task

EXPORT = Asset(name="walkme_webhook_export", uri="s3://walkme-exports/webhooks")  # the producer's asset
PIPELINE = "sample_webhooks"  # the pipeline in pipelines.yaml (with schedule: none)
DAY_KEY = "day"  # where the producer's event extra names the exported day


def replay_requests(extras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One trigger per exported day the events name (several events may start one run)."""
    days = sorted({str(extra[DAY_KEY]) for extra in extras if extra.get(DAY_KEY)})
    return [
        {
            "trigger_run_id": f"export__{day}",
            "conf": {"start": day, "end": (date.fromisoformat(day) + timedelta(days=1)).isoformat()},
        }
        for day in days
    ]


@task
def exported_days(*, triggering_asset_events: Any = None) -> list[dict[str, Any]]:
    """The triggers for the days the export events name."""
    extras = [dict(e.extra) for events in (triggering_asset_events or {}).values() for e in events]
    return replay_requests(extras)


with DAG(
    dag_id=f"replay_{PIPELINE}_on_export",
    description=f"Replays pipeline '{PIPELINE}' for each day its upstream export lands",
    schedule=EXPORT,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["walkme", "heap"],
):
    TriggerDagRunOperator.partial(
        task_id="replay_day", trigger_dag_id=f"walkme_to_heap_{PIPELINE}", reset_dag_run=True
    ).expand_kwargs(exported_days())
