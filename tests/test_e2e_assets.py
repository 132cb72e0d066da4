"""End to end: a pipeline's run (``dag.test()``) emits its asset event, and a downstream DAG scheduled
on the asset (tests/data/assets/heap_day_downstream.py) gets a run queued; a dry run queues none.

``dag.test()`` records the asset event and queues the consumer (``AssetDagRunQueue``) as the API
server does for a task in a deployment; creating the queued run is the scheduler's next loop, whose
selection (``DagModel.dags_needing_dagruns``) is asserted here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from devtools.local_run import run_dag
from tests.helpers import DATA, ROOT
from walkme_heap.emulator import HeapEmulator

pytestmark = pytest.mark.e2e

DAY_RUN = datetime(2024, 3, 11, tzinfo=UTC)  # replays 2024-03-10
DOWNSTREAM = "heap_day_e2e"
URI = "walkme-heap://heap_default/e2e"


@pytest.fixture
def downstream(
    airflow_db: Path, heap_connection: HeapEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The downstream DAGs written to the metadata database as the DAG processor writes them (the
    dags-folder bundle), unpaused, with nothing queued; paused again afterwards."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(DATA / "e2e" / "pipelines.yaml"))
    DagBundlesManager().sync_bundles_to_db()
    folder = DATA / "assets"
    bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder, bundle_name="dags-folder")
    assert bag.import_errors == {}
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == DOWNSTREAM).values(is_paused=False))
        session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == DOWNSTREAM))
    yield DOWNSTREAM
    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == DOWNSTREAM).values(is_paused=True))
        session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == DOWNSTREAM))


def events_and_queue(run_id: str) -> tuple[list[dict], list[str], dict]:
    """The run's events of the pipeline's asset, the DAGs queued on it, and what the scheduler would
    create runs for now."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        asset = session.scalars(select(AssetModel).where(AssetModel.uri == URI)).one()
        extras = [
            e.extra
            for e in session.scalars(
                select(AssetEvent).where(AssetEvent.asset_id == asset.id, AssetEvent.source_run_id == run_id)
            )
        ]
        queued = list(
            session.scalars(
                select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.asset_id == asset.id)
            )
        )
        _, triggered = DagModel.dags_needing_dagruns(session)
        return extras, queued, dict(triggered)


def test_a_day_in_heap_queues_the_downstream_dag(downstream: str) -> None:
    result = run_dag(ROOT / "dags", "walkme_to_heap_e2e", DAY_RUN)
    assert result.state == "success"
    extras, queued, triggered = events_and_queue(result.run_id)
    assert extras == [
        {
            "pipeline": "e2e",
            "window": {"start": "2024-03-10T00:00:00+00:00", "end": "2024-03-11T00:00:00+00:00"},
            "app_id": "test-app",
            "read": 10,
            "sent": 6,
            "already_sent": 0,
            "invalid": 2,
            "rejected": 0,
            "skipped": 2,
            "force": False,
        }
    ]
    assert queued == [downstream]
    assert downstream in triggered  # the scheduler's next loop creates its asset-triggered run


def test_a_dry_run_queues_nothing(downstream: str) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    result = run_dag(ROOT / "dags", "walkme_to_heap_e2e", DAY_RUN, {"dry_run": True})
    assert result.state == "success"  # the replay task ended skipped: the run still succeeds
    assert result.summary is not None and result.summary["dry_run"] is True
    with create_session() as session:
        state = session.scalar(
            select(TaskInstance.state).where(
                TaskInstance.dag_id == "walkme_to_heap_e2e", TaskInstance.run_id == result.run_id
            )
        )
    assert state == "skipped"
    extras, queued, triggered = events_and_queue(result.run_id)
    assert (extras, queued) == ([], [])
    assert downstream not in triggered
