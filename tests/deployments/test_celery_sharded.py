"""A real CeleryExecutor deployment replays a 4-shard day while one worker is killed with SIGKILL.

Redis (127.0.0.1:6379) is the broker; PostgreSQL (127.0.0.1:5432) holds the metadata database, the
Celery results and the ledger; the API server, scheduler, DAG processor and two Celery workers run
as separate processes. The emulator enforces Heap's documented limits (15,000 events a minute per
app), so the day needs three minutes of budget: the shards share it through the ledger. Once a
worker runs a shard that Heap has acknowledged events of, that worker dies whole (SIGKILL to every
process of its session). Airflow notices the missing heartbeats, retries the shard on the other
worker, and the ledger makes the retry resume. Then: every valid event is stored exactly once, no
calendar minute holds more than the limit, nothing was throttled, and the day's summary reconciles.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.deployments.deployment import Deployment
from tests.helpers import expected_keys, free_port, postgres_connection, received, write_day
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.window import Window

pytestmark = pytest.mark.e2e

DAG_ID = "walkme_to_heap_celery"
SHARDS = 4
APP = "celery-app"
APP_LIMIT = 15_000  # Heap's documented limit per minute
VALID = 32_000  # three minutes of budget
INVALID = 6
REDIS_DB = 13
DB = f"walkme_heap_celery_{os.getpid()}"
PG = "postgres@127.0.0.1:5432"


def redis_client() -> Any:
    """The local Redis; skip without one, unless CI requires it."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis must be reachable under CI=true: {exc}")
        pytest.skip(f"no Redis at 127.0.0.1:6379: {exc}")
    return client


def admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as db:
        db.execute(statement)


class CeleryDeployment(Deployment):
    def __init__(self, home: Path, emulator: HeapEmulator) -> None:
        super().__init__(
            home,
            "pipelines:\n  celery:\n    start_date: 2024-03-10\n    schedule: none\n"
            f"    shards: {SHARDS}\n    retries: 2\n    retry_delay_seconds: 3\n    source:\n"
            "      path: {exports}/day_{date:%Y-%m-%d}.csv\n"
            "    mapping:\n      event_name: {event_type: complete}\n",
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.deployments.airflow_settings.get_hostname",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{PG}/{DB}",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{PG}/{DB}",
                # Two task slots a worker: the four shards start two on each worker.
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
                # A dead worker is noticed when its tasks stop heartbeating: after 30 s here (the
                # default is 5 minutes), then the shard is retried after retry_delay_seconds. A live
                # task heartbeats every 2 s: 15 missed in a row would take a very loaded machine.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "1",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
                "AIRFLOW_CONN_WALKME_HEAP_LEDGER": f"postgresql://{PG}/{DB}",
                "AIRFLOW_CONN_HEAP_DEFAULT": json.dumps(
                    {"conn_type": "heap", "host": emulator.url, "login": APP}
                ),
            },
        )

    def start_workers(self) -> None:
        for name in ("w1", "w2"):
            self.spawn(
                f"worker-{name}",
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                env={
                    "WALKME_HEAP_TEST_HOSTNAME": name,
                    # each worker serves its task logs on a port of its own
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                },
            )
        for name in ("w1", "w2"):  # both take tasks before the day is triggered
            log = self.home / f"worker-{name}.log"
            self.wait(
                f"worker {name}",
                lambda log=log, name=name: f"{name}@" in log.read_text() and " ready." in log.read_text(),
                120,
            )

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(f"postgresql://{PG}/{DB}") as db:
            return db.execute(sql, params).fetchall()

    def shards(self, run_id: str) -> dict[int, tuple[str, int, str]]:
        """map index -> (state, try number, host name) of the replay shards."""
        rows = self.query(
            "SELECT map_index, state, try_number, hostname FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s AND task_id = 'replay'",
            DAG_ID,
            run_id,
        )
        return {int(m): (str(s), int(t or 0), str(h or "")) for m, s, t, h in rows}

    def acked_by(self, shard: int) -> int:
        """Events Heap acknowledged to any try of one shard (the ledger's rows)."""
        (row,) = self.query(
            "SELECT coalesce(sum(events), 0) FROM walkme_heap_acks WHERE run_id LIKE %s",
            f"%#shard-{shard + 1}-of-{SHARDS}#%",
        )
        return int(row[0])

    def wait(self, what: str, condition: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.assert_running()
            try:
                value = condition()
            except Exception:
                value = None
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.logs()}"
            time.sleep(1)


@pytest.fixture(scope="module")
def celery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CeleryDeployment, HeapEmulator]]:
    postgres_connection().close()  # skips (or fails under CI=true) without PostgreSQL
    redis_client().flushdb()
    admin(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    admin(f"CREATE DATABASE {DB}")
    settings = EmulatorSettings(app_limit=APP_LIMIT, identity_limit=1000)
    with HeapEmulator(settings=settings) as emulator:
        cluster = CeleryDeployment(tmp_path_factory.mktemp("celery-deployment"), emulator)
        try:
            cluster.start(DAG_ID)
            cluster.start_workers()
            yield cluster, emulator
        finally:
            cluster.stop()
            admin(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
            redis_client().flushdb()


def test_a_sharded_day_survives_a_worker_killed_mid_run(celery) -> None:
    cluster, emulator = celery
    day = Window(datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC))
    path = write_day(cluster.data / "day_2024-03-10.csv", 0, invalid=INVALID)
    for first in range(0, VALID, 4000):  # many identities: each stays far below its own limit
        _append_rows(path, first, 4000, day)
    keys = expected_keys(path, day)
    assert len(keys) == VALID

    run_id = "celery-day-1"
    cluster.airflow(
        "dags",
        "trigger",
        DAG_ID,
        "--run-id",
        run_id,
        "--conf",
        '{"start": "2024-03-10", "end": "2024-03-11"}',
    )

    # In the middle: a worker runs a shard that Heap has already acknowledged events of.
    def victim() -> tuple[str, list[int]] | None:
        shards = cluster.shards(run_id)
        for host in ("w1", "w2"):
            mine = [m for m, (state, _, h) in shards.items() if h == host and state == "running"]
            if mine and any(cluster.acked_by(m) for m in mine):
                return host, mine
        return None

    host, doomed = cluster.wait("a worker with a shard under way", victim, 240)
    killed = cluster.kill(f"worker-{host}")
    assert len(killed) > 1  # the worker and its task processes
    # A shard may have finished between being chosen and the kill: it is not doomed (a killed
    # worker's shard can no longer succeed there, so the states read now are final for it).
    states = cluster.shards(run_id)
    doomed = [m for m in doomed if states[m][0] != "success"]
    assert doomed, f"every chosen shard finished before the kill: {states}"
    acked_by_the_dead = sum(cluster.acked_by(m) for m in doomed)  # before any retry starts
    received_at_kill = len(received(emulator))
    assert received_at_kill < VALID  # the day was not over

    def finished() -> str | None:
        rows = cluster.query("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", DAG_ID, run_id)
        state = str(rows[0][0]) if rows else ""
        return state if state in ("success", "failed") else None

    state = cluster.wait("the day's run to finish", finished, 600)
    shards = cluster.shards(run_id)
    assert state == "success", f"{shards}\n{cluster.logs()}"

    # Retried elsewhere: the killed worker's shards ran again on the other worker.
    survivor = "w2" if host == "w1" else "w1"
    for shard in doomed:
        assert shards[shard][0] == "success" and shards[shard][1] >= 2 and shards[shard][2] == survivor
    assert all(state == "success" for state, _, _ in shards.values()) and len(shards) == SHARDS
    assert any(tries == 1 for _, tries, _ in shards.values())  # the other worker's shards ran on

    # Every valid event exactly once: a retry repeats at most the batch that was in flight.
    got = [e["idempotency_key"] for e in received(emulator) if e["app_id"] == APP]
    assert sorted(got) == sorted(keys)
    stats = requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()
    assert stats["duplicate_events"] <= 1000 * len(doomed)
    # Within Heap's limit in every minute, and never throttled: the shards shared the budget.
    per_minute = stats["per_minute"][APP]
    assert max(per_minute.values()) <= APP_LIMIT and len(per_minute) >= 3
    assert stats.get("throttled_429", 0) == 0

    # The day's summary (the summary task's XCom) adds the shards up and reconciles.
    ((summary,),) = cluster.query(
        "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = 'summary' "
        "AND key = 'return_value'",
        DAG_ID,
        run_id,
    )
    summary = summary if isinstance(summary, dict) else json.loads(summary)
    assert summary["read"] == VALID + INVALID
    assert summary["sent"] + summary["already_sent"] == VALID
    assert summary["already_sent"] == acked_by_the_dead > 0  # the retries resumed from the ledger
    assert summary["invalid"] == INVALID and summary["skipped"] == 0 and summary["rejected"] == 0
    assert (
        summary["read"]
        == summary["sent"]
        + summary["already_sent"]
        + summary["invalid"]
        + summary["skipped"]
        + summary["rejected"]
    )
    runs = cluster.query("SELECT shard, status FROM walkme_heap_runs WHERE pipeline = 'celery'")
    assert {shard for shard, status in runs if status == "success"} == {f"{i}/{SHARDS}" for i in range(1, 5)}


def _append_rows(path: Path, first: int, count: int, day: Window) -> None:
    """``count`` valid rows, each of a new identity every 16 rows (2,000 identities in all)."""
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for n in range(first, first + count):
            when = day.start_ms + n * 2_591 % 86_400_000
            writer.writerow([f"person-{n // 16:05d}", when, "play", "wt", str(n % 9), f"s-{n}", f"Page {n}"])
