"""pipelines.yaml -> one DAG per pipeline, ``walkme_to_heap_<name>``.

Daily partitions need real data intervals: ``CronDataIntervalTimetable`` (a run with logical date
D covers [D-1, D)); Airflow 3's plain ``schedule="@daily"`` gives zero-length intervals.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, conf

from walkme_heap.assets import pipeline_asset
from walkme_heap.config import ConfigError, Pipeline, load_pipelines
from walkme_heap.operators.replay import WalkMeToHeapOperator
from walkme_heap.operators.sensor import WalkMeExportSensor
from walkme_heap.operators.summary import ReplaySummaryOperator

DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"


def _bound(title: str, description: str) -> Param:
    """A window bound for a manual run: a date or an ISO date-time, or empty."""
    return Param(None, type=["null", "string"], pattern=DATE_PATTERN, title=title, description=description)


def _params() -> dict[str, Param]:
    return {
        "start": _bound(
            "Start (UTC, inclusive)",
            "For a manual run: first day or instant to replay, e.g. 2024-03-10. "
            "Leave empty to replay the run's data interval.",
        ),
        "end": _bound(
            "End (UTC, exclusive)",
            "For a manual run: replay up to, not including, this day or instant, "
            "e.g. 2024-03-11. Must be after start.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Read, map and count without sending anything to Heap or writing anything.",
        ),
        "limit": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Row limit (trial run)",
            description="Read at most this many rows of the window, e.g. 1000 for a first check.",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force",
            description="Send every event of the window again, even those the ledger says Heap "
            "acknowledged (Heap ignores repeats by idempotency key).",
        ),
    }


def build_dag(pipeline: Pipeline) -> DAG:
    """The DAG of one pipeline: a replay task per data interval, or one per shard and a summary."""
    schedule = None
    try:
        if pipeline.schedule.lower() not in ("none", "manual"):
            schedule = CronDataIntervalTimetable(pipeline.schedule, timezone="UTC")
            schedule.validate()
    except Exception as exc:  # any cron parsing error becomes a configuration error
        raise ConfigError(
            f"pipeline '{pipeline.name}': key 'schedule' is not a valid cron expression or "
            f"preset: {pipeline.schedule!r} ({exc})"
        ) from None
    with DAG(
        dag_id=pipeline.dag_id,
        description=pipeline.description or f"Replay WalkMe events into Heap ({pipeline.name})",
        schedule=schedule,
        start_date=pipeline.start_date,
        end_date=pipeline.end_date,
        catchup=pipeline.catchup,
        max_active_runs=pipeline.max_active_runs,
        params=_params(),
        tags=["walkme", "heap", *pipeline.tags],
        default_args={
            "retries": pipeline.retries,
            "retry_delay": timedelta(seconds=pipeline.retry_delay_seconds),
        },
        doc_md=__doc__,
    ) as dag:
        arguments = {
            "task_id": "replay",
            "pipeline": pipeline.name,
            "source": pipeline.source,
            "mapping": pipeline.mapping,
            "heap_conn_id": pipeline.heap_conn_id,
            "pool": pipeline.heap_pool,
            "ledger_conn_id": pipeline.ledger_conn_id,
            "dead_letters": pipeline.dead_letters,
            "dead_letters_conn_id": pipeline.dead_letters_conn_id,
            "max_invalid_ratio": pipeline.max_invalid_ratio,
            "lateness_seconds": pipeline.lateness_seconds,
        }
        wait = None
        if pipeline.source.type in ("csv", "jsonl") and pipeline.source.on_missing == "wait":
            wait = WalkMeExportSensor(  # reschedule mode: no worker slot held between looks
                task_id="wait_for_export",
                pipeline=pipeline.name,
                source=pipeline.source,
                poke_interval=pipeline.source.wait_poke_seconds,
                timeout=pipeline.source.wait_timeout_seconds,
                retries=0,  # its timeout is the answer: fail loudly, do not wait all over again
            )
        # "The window is in Heap": the outlet of the task that ends the window (see assets.py).
        in_heap = pipeline_asset(pipeline.name, pipeline.heap_conn_id)
        if pipeline.shards == 1:
            replay = WalkMeToHeapOperator(**arguments, outlets=[in_heap])
            if wait is not None:
                wait >> replay
        else:
            # One mapped task instance per shard (each its own retries, worker and ledger rows),
            # then the day's summary from all of them.
            shards = WalkMeToHeapOperator.partial(
                **arguments, shards=pipeline.shards, map_index_template="{{ shard_label }}"
            ).expand(shard=list(range(pipeline.shards)))
            if wait is not None:
                wait >> shards
            ReplaySummaryOperator(
                task_id="summary",
                pipeline=pipeline.name,
                summaries=shards.output,
                shards=pipeline.shards,
                max_invalid_ratio=pipeline.max_invalid_ratio,
                outlets=[in_heap],
            )
    return dag


def build_dags(path: Path | str | None = None) -> dict[str, DAG]:
    """Every configured pipeline's DAG, keyed by dag_id (for a DAG file's ``globals()``). Without
    ``path``: ``config.config_path``, ``pipelines.yaml`` in Airflow's DAGs folder for an installed
    package."""
    dags_folder = conf.get("core", "dags_folder", fallback=None)
    return {p.dag_id: build_dag(p) for p in load_pipelines(path, dags_folder=dags_folder)}
