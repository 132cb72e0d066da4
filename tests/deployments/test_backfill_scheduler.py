"""A real Airflow deployment (API server, scheduler, DAG processor, LocalExecutor) started by the
test, driven through ``airflow backfill create`` against the emulator with its limits on.

Four days, one of them failing (its file is missing); then the file arrives and the backfill is
created again with ``--reprocess-behavior failed``. Afterwards every valid event is in the emulator
exactly once, only the failed day ran twice, and no request was ever throttled (the replays share
the app's budget through the ledger and a one-slot pool, with ``--max-active-runs 2``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.deployments.deployment import Deployment, sqlite_local_executor
from tests.helpers import expected_keys, received, write_day
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.window import Window

pytestmark = pytest.mark.e2e
DAYS = ["2024-03-10", "2024-03-11", "2024-03-12", "2024-03-13"]
MISSING = "2024-03-12"
APP_LIMIT = 100  # events a minute: the four days (160 events) need two minutes of budget


class BackfillDeployment(Deployment):
    """LocalExecutor, SQLite metadata database, the ledger in SQLite under ``home``."""

    def __init__(self, home: Path, emulator: HeapEmulator) -> None:
        super().__init__(
            home,
            "pipelines:\n  bf:\n    start_date: 2024-03-10\n    end_date: 2024-03-14\n    catchup: false\n"
            "    retries: 0\n"
            "    max_active_runs: 2\n    source:\n"
            "      path: {exports}/day_{date:%Y-%m-%d}.csv\n"
            "    mapping:\n      event_name: {event_type: complete}\n",
            {
                **sqlite_local_executor(home),
                "AIRFLOW_CONN_HEAP_DEFAULT": (
                    f'{{"conn_type": "heap", "host": "{emulator.url}", "login": "bf-app", '
                    f'"extra": {{"app_rate_limit": {APP_LIMIT}}}}}'
                ),
            },
        )

    def runs(self) -> dict[str, str]:
        """Replayed day (its data interval's start) -> state of the newest run, from the metadata DB."""
        with sqlite3.connect(self.home / "airflow.db") as db:
            rows = db.execute(
                "SELECT data_interval_start, state FROM dag_run "
                "WHERE dag_id = 'walkme_to_heap_bf' ORDER BY id"
            ).fetchall()
        return {str(start)[:10]: state for start, state in rows}

    def backfills_done(self) -> bool:
        with sqlite3.connect(self.home / "airflow.db") as db:
            return db.execute("SELECT count(*) FROM backfill WHERE completed_at IS NULL").fetchone()[0] == 0

    def wait_for(self, dates: list[str], timeout: float = 360) -> dict[str, str]:
        """Until every day's run finished and the backfill is marked complete."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs()
            if all(runs.get(d) in ("success", "failed") for d in dates) and self.backfills_done():
                return runs
            assert time.monotonic() < deadline, f"runs {runs}\n{self.logs()}"
            time.sleep(2)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackfillDeployment, HeapEmulator]]:
    with HeapEmulator(settings=EmulatorSettings(app_limit=APP_LIMIT, identity_limit=1000)) as emulator:
        cluster = BackfillDeployment(tmp_path_factory.mktemp("airflow-deployment"), emulator)
        try:
            cluster.start("walkme_to_heap_bf")
            yield cluster, emulator
        finally:
            cluster.stop()


def test_backfill_a_range_then_reprocess_the_failed_day(deployment) -> None:
    cluster, emulator = deployment
    keys: set[str] = set()
    for n, day in enumerate(DAYS):
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        window = Window(start, start + timedelta(days=1))
        path = write_day(
            cluster.data / f"day_{day}.csv", 40, first=n * 1000, invalid=0, start_ms=window.start_ms
        )
        keys |= expected_keys(path, window)
    (cluster.data / f"day_{MISSING}.csv").rename(cluster.data / "held_back.csv")

    dates = DAYS  # a backfill's dates are the days replayed (each run's data interval starts there)
    backfill = [
        "backfill",
        "create",
        "--dag-id",
        "walkme_to_heap_bf",
        "--from-date",
        dates[0],
        "--to-date",
        dates[-1],
        "--max-active-runs",
        "2",
    ]
    cluster.airflow(*backfill, locked_retries=3)
    runs = cluster.wait_for(dates)
    assert runs == {d: ("failed" if d == MISSING else "success") for d in dates}, runs

    (cluster.data / "held_back.csv").rename(cluster.data / f"day_{MISSING}.csv")
    cluster.airflow(*backfill, "--reprocess-behavior", "failed", locked_retries=3)
    runs = cluster.wait_for(dates)
    assert runs == dict.fromkeys(dates, "success"), runs

    got = [e["idempotency_key"] for e in received(emulator)]
    assert sorted(got) == sorted(keys) and len(got) == 160  # every event exactly once
    stats = requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()
    assert stats.get("throttled_429", 0) == 0 and stats["duplicate_events"] == 0
    assert max(stats["per_minute"]["bf-app"].values()) <= APP_LIMIT
    with sqlite3.connect(cluster.home / "walkme_heap" / "ledger.db") as db:
        per_day = dict(
            db.execute("SELECT window_label, count(*) FROM walkme_heap_runs GROUP BY window_label")
        )
        missing_day = db.execute(
            "SELECT status, message FROM walkme_heap_runs WHERE window_label = ? ORDER BY id", [MISSING]
        ).fetchall()
    assert per_day == {"2024-03-10": 1, "2024-03-11": 1, "2024-03-12": 2, "2024-03-13": 1}
    (first, first_message), (second, second_message) = missing_day
    assert (first, second, second_message) == ("failed", "success", "")
    assert first_message.startswith(f"no file for {MISSING} at {cluster.data / f'day_{MISSING}.csv'}")
