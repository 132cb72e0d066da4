"""Late data under the real scheduler (issue 14's acceptance): scheduled runs, no run by hand.

A real deployment (API server, scheduler, DAG processor, LocalExecutor, SQLite metadata) runs three
pipelines with ``catchup`` over six days, each with a lateness of two days:

- ``late_files``: CSV files filed by arrival day, ``on_missing: skip``; day 2's file lands only after
  day 2's run (the DAGs end with day 2 at first; once their runs are done, the file arrives,
  ``end_date`` is moved on, and the scheduler runs days 3-5);
- ``late_sqlite`` / ``late_pg``: a table loaded in daily batches (SQLite, PostgreSQL), selected by its
  load-time column; days 3-5's loads are inserted between the two phases.

Each day's file (load) holds late events of earlier days, within the bound and beyond it.
Afterwards every event within the bound is in the emulator exactly once, every one beyond it is
dead-lettered with its reason, and the counts reconcile per run and per event day.

The DAGs folder also holds a downstream DAG per pipeline scheduled on its asset ("the window is in
Heap", ``tests/data/assets/heap_day_downstream.py``): the scheduler starts it from the replays'
asset events, and it sees every window.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.deployments.deployment import Deployment, sqlite_local_executor
from tests.helpers import DATA, PG_DSN, ROOT, postgres_connection, received
from walkme_heap.emulator import HeapEmulator

pytestmark = pytest.mark.e2e
FIRST = datetime(2024, 3, 10, tzinfo=UTC)
MISSING_DAY = 2
PIPELINES = ("late_files", "late_sqlite", "late_pg")
PREFIX = {"late_files": "f", "late_sqlite": "s", "late_pg": "p"}
TABLE = "late_scheduled_events"

# (arrival day, event day, hour): arrival decides the file (load); the bound is two days.
EVENTS = [
    *((d, d, h) for d in range(6) for h in (1, 13)),  # on time
    (1, 0, 23.99),  # 23:59 of day 0, filed with day 1
    (2, 0, 12),  # two days late: within the bound (in the file that lands after its run)
    (3, 0, 5),  # three days late: beyond
    (4, 3, 22),
    (5, 1, 3),  # four days late: beyond
    (5, 4, 0.5),
]
BEYOND = {n for n, (arrival, event_day, _) in enumerate(EVENTS) if arrival - event_day > 2}


def day(n: int) -> str:
    return (FIRST + timedelta(days=n)).date().isoformat()


def ms(event_day: int, hour: float) -> int:
    return int((FIRST + timedelta(days=event_day, hours=hour)).timestamp() * 1000)


def pipelines_yaml(end_day: int, warehouse: Path) -> str:
    common = (
        f"    start_date: {day(0)}\n    end_date: {day(end_day)}\n    catchup: true\n"
        "    max_active_runs: 1\n    retries: 0\n    lateness: 2 days\n"
    )
    sql_mapping = (
        "    mapping:\n      preset: none\n      columns:\n        identity: uid\n"
        "        timestamp: created_at\n        session_id: sId\n"
        "      event_name:\n        constant: Late Scheduled\n"
    )
    sql_source = (
        "      type: sql\n      table: " + TABLE + "\n      time_column: created_at\n"
        "      time_type: epoch_ms\n      window_on: load_time\n      load_time_column: loaded_at\n"
    )
    return (
        "pipelines:\n"
        "  late_files:\n" + common + "    source:\n"
        "      path: {exports}/webhooks_{date:%Y-%m-%d}.csv\n      on_missing: skip\n"
        "    mapping:\n      event_name: {event_type: complete}\n"
        "  late_sqlite:\n"
        + common
        + "    source:\n      conn_id: warehouse_sqlite\n"
        + sql_source
        + sql_mapping
        + "  late_pg:\n"
        + common
        + "    source:\n      conn_id: warehouse_pg\n"
        + sql_source
        + sql_mapping
    ).replace("{warehouse}", str(warehouse))


class LateDeployment(Deployment):
    def __init__(self, home: Path, emulator: HeapEmulator) -> None:
        self.warehouse = home / "warehouse.db"
        dags = home / "dags"  # the project's DAG file and the downstream DAGs
        dags.mkdir()
        shutil.copy(ROOT / "dags" / "walkme_to_heap.py", dags)
        shutil.copy(DATA / "assets" / "heap_day_downstream.py", dags)
        super().__init__(
            home,
            pipelines_yaml(MISSING_DAY, self.warehouse),
            {
                **sqlite_local_executor(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",  # sees end_date moved on
                "AIRFLOW_CONN_HEAP_DEFAULT": json.dumps(
                    {"conn_type": "heap", "host": emulator.url, "login": "late-app"}
                ),
                "AIRFLOW_CONN_WAREHOUSE_SQLITE": json.dumps(
                    {"conn_type": "sqlite", "host": str(self.warehouse)}
                ),
                "AIRFLOW_CONN_WAREHOUSE_PG": PG_DSN,
            },
        )

    def set_end(self, end_day: int) -> None:
        text = pipelines_yaml(end_day, self.warehouse).replace("{exports}", str(self.data))
        (self.home / "pipelines.yaml").write_text(text)

    def wait_for_new_versions(self, timeout: float = 120) -> None:
        """Until the DAG processor stored a second version of every pipeline's DAG."""
        deadline = time.monotonic() + timeout
        while True:
            with sqlite3.connect(self.home / "airflow.db") as db:
                versions = dict(
                    db.execute("SELECT dag_id, max(version_number) FROM dag_version GROUP BY dag_id")
                )
            if all(versions.get(f"walkme_to_heap_{p}", 0) >= 2 for p in PIPELINES):
                return
            assert time.monotonic() < deadline, f"versions {versions}\n{self.logs()}"
            self.assert_running()
            time.sleep(1)

    def downstream_windows(self, timeout: float = 180) -> dict[str, list[str]]:
        """Pipeline -> the window starts its downstream DAG's runs saw (from their XCom), once every
        day is seen or no run is pending; with each run's type and state checked."""
        deadline = time.monotonic() + timeout
        while True:
            with sqlite3.connect(self.home / "airflow.db") as db:
                runs = db.execute(
                    "SELECT dag_id, run_type, state FROM dag_run WHERE dag_id LIKE 'heap_day_%'"
                ).fetchall()
                values = db.execute(
                    "SELECT dag_id, value FROM xcom "
                    "WHERE task_id = 'windows_in_heap' AND key = 'return_value'"
                ).fetchall()
            seen: dict[str, list[str]] = {p: [] for p in PIPELINES}
            for dag_id, value in values:
                for extra in json.loads(value):
                    seen[dag_id.removeprefix("heap_day_")].append(extra["window"]["start"][:10])
            pending = [r for r in runs if r[2] not in ("success", "failed")]
            if all(len(set(days)) == 6 for days in seen.values()) and not pending:
                assert {(t, state) for _, t, state in runs} == {("asset_triggered", "success")}, runs
                return {p: sorted(days) for p, days in seen.items()}
            assert time.monotonic() < deadline, f"downstream runs {runs}, windows {seen}\n{self.logs()}"
            time.sleep(2)

    def wait_for_downstream_at_rest(self, timeout: float = 120) -> None:
        """Until no downstream run is queued or running, three checks 2 s apart: halting the
        scheduler would kill a running one's task (SIGTERM; seen failing a run)."""
        deadline, quiet = time.monotonic() + timeout, 0
        while quiet < 3:
            with sqlite3.connect(self.home / "airflow.db") as db:
                pending = db.execute(
                    "SELECT dag_id, state FROM dag_run WHERE dag_id LIKE 'heap_day_%' "
                    "AND state NOT IN ('success', 'failed')"
                ).fetchall()
            quiet = 0 if pending else quiet + 1
            assert time.monotonic() < deadline, f"downstream runs still pending: {pending}\n{self.logs()}"
            time.sleep(2)

    def runs(self) -> list[tuple[str, str, str, str]]:
        """(dag id, data interval start day, run type, state) of every pipeline's DAG run."""
        with sqlite3.connect(self.home / "airflow.db") as db:
            rows = db.execute(
                "SELECT dag_id, data_interval_start, run_type, state FROM dag_run "
                "WHERE dag_id LIKE 'walkme_to_heap_%' ORDER BY id"
            ).fetchall()
        return [(d, str(s)[:10], t, state) for d, s, t, state in rows]

    def wait_for(self, days: int, timeout: float = 420) -> list[tuple[str, str, str, str]]:
        """Until every pipeline's runs of the first ``days`` days finished."""
        deadline = time.monotonic() + timeout
        wanted = {(f"walkme_to_heap_{p}", day(n)) for p in PIPELINES for n in range(days)}
        while True:
            runs = self.runs()
            done = {(d, s) for d, s, _, state in runs if state in ("success", "failed")}
            if wanted <= done:
                return runs
            assert time.monotonic() < deadline, f"runs {runs}\n{self.logs()}"
            self.assert_running()
            time.sleep(2)


def write_file(folder: Path, arrival: int) -> None:
    with (folder / f"webhooks_{day(arrival)}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["wm.euId", "created_at", "type", "oType", "oId", "sId", "ctx.title"])
        for n, (filed, event_day, hour) in enumerate(EVENTS):
            if filed == arrival:
                writer.writerow([f"f-{n}", ms(event_day, hour), "play", "wt", "1", f"s-{n}", "t"])


def load(warehouse: Path, arrivals: range) -> None:
    """Each arrival day's batch, loaded at 06:00 that day, into SQLite and PostgreSQL."""

    def rows(prefix: str) -> list[tuple[str, int, int, str]]:
        return [
            (f"{prefix}-{n}", ms(event_day, hour), ms(filed, 6), f"s-{n}")
            for n, (filed, event_day, hour) in enumerate(EVENTS)
            if filed in arrivals
        ]

    create = f'CREATE TABLE IF NOT EXISTS {TABLE} (uid TEXT, created_at BIGINT, loaded_at BIGINT, "sId" TEXT)'
    with sqlite3.connect(warehouse) as db:
        db.execute(create)
        db.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?)", rows("s"))
    with postgres_connection() as db, db.cursor() as cursor:
        if arrivals.start == 0:
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute(create)
        cursor.executemany(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s)", rows("p"))


@pytest.fixture(scope="module")
def scheduled(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LateDeployment, HeapEmulator, list]]:
    """Phase one (days 0-2, day 2's file missing), then the file and the loads of days 3-5 arrive
    and ``end_date`` moves on: phase two (days 3-5). Both phases are the scheduler's own runs."""
    postgres_connection().close()  # skips without a server, fails under CI=true
    with HeapEmulator() as emulator:
        cluster = LateDeployment(tmp_path_factory.mktemp("late-deployment"), emulator)
        for arrival in range(6):
            write_file(cluster.data, arrival)
        held = cluster.data / "held_back.csv"
        (cluster.data / f"webhooks_{day(MISSING_DAY)}.csv").rename(held)
        load(cluster.warehouse, range(0, 3))
        try:
            cluster.start("walkme_to_heap_late_files")
            for name in PIPELINES[1:]:
                cluster.airflow("dags", "unpause", f"walkme_to_heap_{name}")
            cluster.wait_for(MISSING_DAY + 1)
            held.rename(cluster.data / f"webhooks_{day(MISSING_DAY)}.csv")  # lands after its run
            load(cluster.warehouse, range(3, 6))
            # end_date moves on while the scheduler is stopped: a run it made from the DAG as it
            # was would have no task (each task ends with the DAG's old end_date)
            cluster.wait_for_downstream_at_rest()
            cluster.halt("scheduler")
            cluster.set_end(5)
            cluster.wait_for_new_versions()
            cluster.spawn("scheduler", "scheduler")
            runs = cluster.wait_for(6)
            yield cluster, emulator, runs
        finally:
            cluster.stop()


def _ledger(cluster: LateDeployment, text: str, params: list) -> list[tuple]:
    with sqlite3.connect(cluster.home / "walkme_heap" / "ledger.db") as db:
        return db.execute(text, params).fetchall()


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_scheduled_runs_send_every_event_within_the_bound_exactly_once(scheduled, pipeline: str) -> None:
    cluster, emulator, runs = scheduled
    mine = [(s, t, state) for d, s, t, state in runs if d == f"walkme_to_heap_{pipeline}"]
    assert mine == [(day(n), "scheduled", "success") for n in range(6)]  # no run by hand, none failed

    prefix = PREFIX[pipeline]
    got = Counter(e["identity"] for e in received(emulator) if e["identity"].startswith(f"{prefix}-"))
    assert got == Counter(f"{prefix}-{n}" for n in range(len(EVENTS)) if n not in BEYOND)

    letters = [
        json.loads(line)
        for path in sorted((cluster.home / "walkme_heap" / "dead_letters" / pipeline).glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    identity = "wm.euId" if pipeline == "late_files" else "uid"
    assert sorted((d["reason"], d["source"][identity]) for d in letters) == sorted(
        ("later_than_lateness", f"{prefix}-{n}") for n in BEYOND
    )


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_counts_reconcile_per_run_and_per_event_day(scheduled, pipeline: str) -> None:
    cluster, _, _ = scheduled
    records = _ledger(
        cluster,
        "SELECT window_label, status, read_rows, sent, already_sent, invalid, rejected, skipped, late_data "
        "FROM walkme_heap_runs WHERE pipeline = ? ORDER BY id",
        [pipeline],
    )
    assert [(r[0], r[1]) for r in records] == [(day(n), "success") for n in range(6)]
    for label, _, read, sent, already, invalid, rejected, skipped, _ in records:
        arrival = (datetime.fromisoformat(label).replace(tzinfo=UTC) - FIRST).days
        own = sum(1 for e in EVENTS if e[0] == arrival)
        if pipeline == "late_files" and arrival == MISSING_DAY:
            own = 0  # its file was missing at its run
        if pipeline == "late_files" and arrival == MISSING_DAY + 1:
            own += sum(1 for e in EVENTS if e[0] == MISSING_DAY)  # found, and read, by the next run
        assert read == own == sent + already + invalid + rejected + skipped, label

    acks = _ledger(
        cluster,
        "SELECT day, sum(events), sum(late_events) FROM walkme_heap_acks WHERE pipeline = ? GROUP BY day",
        [pipeline],
    )
    past_bound: Counter[str] = Counter()
    for *_, late_data in records:
        past_bound.update(json.loads(late_data)["past_bound"])
    for event_day in range(6):
        events = [(n, e) for n, e in enumerate(EVENTS) if e[1] == event_day]
        late_arrival = {
            n
            for n, (arrival, _, _) in events
            if arrival != event_day or (pipeline == "late_files" and arrival == MISSING_DAY)
        }
        sent, late = next(((s, lt) for d, s, lt in acks if d == day(event_day)), (0, 0))
        assert (sent - late, late, past_bound[day(event_day)]) == (
            len(events) - len(late_arrival),
            len(late_arrival - BEYOND),
            len(late_arrival & BEYOND),
        ), day(event_day)


def test_the_late_file_was_recorded_missing_and_found_by_the_next_scheduled_run(scheduled) -> None:
    cluster, _, _ = scheduled
    data = dict(
        _ledger(
            cluster,
            "SELECT window_label, late_data FROM walkme_heap_runs WHERE pipeline = 'late_files' ORDER BY id",
            [],
        )
    )
    path = str(cluster.data / f"webhooks_{day(MISSING_DAY)}.csv")
    assert [m[0] for m in json.loads(data[day(MISSING_DAY)])["missing"]] == [path]
    found = json.loads(data[day(MISSING_DAY + 1)])["recovered"]
    assert found == [[path, f"{day(MISSING_DAY)}T00:00:00+00:00", f"{day(MISSING_DAY + 1)}T00:00:00+00:00"]]
    senders = _ledger(
        cluster,
        "SELECT DISTINCT run_id FROM walkme_heap_acks WHERE pipeline = 'late_files' AND day = ?",
        [day(MISSING_DAY)],
    )
    # the run of day 3: Airflow names a scheduled run after its data interval's end
    assert [r[0].split("#")[0] for r in senders] == [f"scheduled__{day(MISSING_DAY + 2)}T00:00:00+00:00"]


def test_each_window_in_heap_starts_the_downstream_dag_scheduled_on_the_pipelines_asset(scheduled) -> None:
    cluster, _, _ = scheduled
    seen = cluster.downstream_windows()
    assert seen == {p: [day(n) for n in range(6)] for p in PIPELINES}  # each window once
