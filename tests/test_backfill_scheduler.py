"""A real Airflow deployment (API server, scheduler, DAG processor, LocalExecutor) started by the
test, driven through ``airflow backfill create`` against the emulator with its limits on.

Four days, one of them failing (its file is missing); then the file arrives and the backfill is
created again with ``--reprocess-behavior failed``. Afterwards every valid event is in the emulator
exactly once, only the failed day ran twice, and no request was ever throttled (the replays share
the app's budget through the ledger and a one-slot pool, with ``--max-active-runs 2``).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, received
from tests.test_delivery_faults import expected_keys, write_day
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.window import Window

pytestmark = pytest.mark.e2e
DAYS = ["2024-03-10", "2024-03-11", "2024-03-12", "2024-03-13"]
MISSING = "2024-03-12"
APP_LIMIT = 100  # events a minute: the four days (160 events) need two minutes of budget


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    def __init__(self, home: Path, emulator: HeapEmulator) -> None:
        self.home = home
        self.data = home / "exports"
        self.data.mkdir(parents=True)
        port = free_port()
        (home / "pipelines.yaml").write_text(
            "pipelines:\n  bf:\n    start_date: 2024-03-10\n    end_date: 2024-03-14\n    catchup: false\n"
            "    retries: 0\n"
            "    max_active_runs: 2\n    source:\n"
            f"      path: {self.data}/day_{{date:%Y-%m-%d}}.csv\n"
            "    mapping:\n      event_name: {event_type: complete}\n"
        )
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API_AUTH__JWT_SECRET": "walkme-heap-test-secret",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "WALKME_HEAP_CONFIG": str(home / "pipelines.yaml"),
            "WALKME_HEAP_HOME": str(home / "walkme_heap"),
            "AIRFLOW_CONN_HEAP_DEFAULT": (
                f'{{"conn_type": "heap", "host": "{emulator.url}", "login": "bf-app", '
                f'"extra": {{"app_rate_limit": {APP_LIMIT}}}}}'
            ),
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def airflow(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode:
            raise AssertionError(
                f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def start(self) -> None:
        self.airflow("db", "migrate")
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "create_pools.py")],
            env=self.env,
            check=True,
            capture_output=True,
        )
        for name in ("api-server", "scheduler", "dag-processor"):
            log = (self.home / f"{name}.log").open("wb")
            args = ["--host", "127.0.0.1", "--workers", "1"] if name == "api-server" else []
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "airflow", name, *args],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 180
        while "walkme_to_heap_bf" not in self.airflow("dags", "list", check=False):
            assert time.monotonic() < deadline, self.logs()
            assert all(p.poll() is None for p in self.processes), self.logs()
            time.sleep(2)
        self.airflow("dags", "unpause", "walkme_to_heap_bf")  # backfill runs of a paused DAG wait

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(self.home.glob("*.log"))
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

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, HeapEmulator]]:
    with HeapEmulator(settings=EmulatorSettings(app_limit=APP_LIMIT, identity_limit=1000)) as emulator:
        cluster = Deployment(tmp_path_factory.mktemp("airflow-deployment"), emulator)
        try:
            cluster.start()
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
    cluster.airflow(*backfill)
    runs = cluster.wait_for(dates)
    assert runs == {d: ("failed" if d == MISSING else "success") for d in dates}, runs

    (cluster.data / "held_back.csv").rename(cluster.data / f"day_{MISSING}.csv")
    cluster.airflow(*backfill, "--reprocess-behavior", "failed")
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
    assert per_day == {"2024-03-10": 1, "2024-03-11": 1, "2024-03-12": 2, "2024-03-13": 1}
