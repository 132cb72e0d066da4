"""The replay report: its data and page, and the page served by Airflow's API server in Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote
from urllib.request import Request, urlopen

import numpy as np
import pytest
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.helpers import DATA, running_api_server
from walkme_heap import report
from walkme_heap.dag_factory import build_dags
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.emulator import HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.ledger.acks import TABLE as ACKS_TABLE
from walkme_heap.ledger.acks import DayArrivals
from walkme_heap.ledger.runs import TABLE as RUNS_TABLE
from walkme_heap.ledger.runs import LateData
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec
from walkme_heap.mapping.timestamps import format_ms
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.report import create_app
from walkme_heap.sharding import Shard
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.window import Window, resolve_window

SPEC = MappingSpec(event_name=EventNameSpec(event_type="complete"))
VIEWER = SimpleAuthManagerUser(username="viewer", role="viewer")


def populate(home: Path, pipeline: str = "e2e", ledger_file: str = "ledger.db") -> None:
    """Two replays of the end-to-end fixture day (the second sends nothing) into ``home``'s ledger,
    and a sharded day."""
    home.mkdir(parents=True, exist_ok=True)
    window = resolve_window({}, datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC))
    path = str(DATA / "e2e" / "walkme_webhooks_{date:%Y-%m-%d}.csv")
    with HeapEmulator() as emulator:
        for _ in range(2):
            ledger = Ledger.sqlite(str(home / ledger_file))
            replay(
                pipeline,
                CsvSource(path, window),
                SPEC,
                window,
                HeapClient(emulator.url, "app"),
                ReplayOptions(max_invalid_ratio=0.5),
                ledger=ledger,
                dead_letters=DeadLetters(str(home / "dead_letters"), pipeline, window.label),
            )
            ledger.close()
        ledger = Ledger.sqlite(str(home / ledger_file))
        for index in range(2):  # a sharded day: one run record per shard
            replay(
                f"{pipeline}_sharded",
                CsvSource(path, window),
                SPEC,
                window,
                HeapClient(emulator.url, "app"),
                ReplayOptions(max_invalid_ratio=0.5, shard=Shard(index, 2)),
                ledger=ledger,
            )
        ledger.close()


@pytest.fixture(scope="module")
def report_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("report") / "walkme_heap"
    populate(home)
    return home


def client_as(
    user: SimpleAuthManagerUser | None = VIEWER,
    auth_manager: SimpleAuthManager | None = None,
    app: FastAPI | None = None,
) -> TestClient:
    """The report app for ``user`` (None: nobody logged in), as Airflow's API server would have
    authenticated them; the tokens themselves are checked against the real API server below."""
    app = app or create_app()
    if user is not None:
        app.dependency_overrides[get_user] = lambda: user
    app.dependency_overrides[report.auth_manager] = lambda: auth_manager or SimpleAuthManager()
    return TestClient(app)


def test_report_page_and_api(report_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    client = client_as()
    data = client.get("/api/days", params={"pipeline": "e2e"}).json()
    (day,) = data["days"]
    assert (
        day["window_label"],
        day["status"],
        day["read_rows"],
        day["sent"],
        day["already_sent"],
        day["invalid"],
        day["skipped"],
    ) == ("2024-03-10", "success", 10, 0, 5, 2, 3)
    assert day["dead_letters"].endswith("/e2e/2024-03-10.jsonl")
    assert data["sent_per_day"] == [{"pipeline": "e2e", "day": "2024-03-10", "app_id": "app", "events": 5}]
    page = client.get("/report", params={"pipeline": "e2e", "day": "2024-03-10"}).text
    assert '<tr id="day-e2e-2024-03-10" class="selected">' in page
    assert '<td data-col="already_sent">5</td>' in page and "<svg" in page
    assert "No replays recorded yet" in client.get("/report", params={"pipeline": "other"}).text
    shards = client.get("/api/days", params={"pipeline": "e2e_sharded"}).json()["days"]
    assert [(d["shard"], d["status"]) for d in shards] == [("1/2", "success"), ("2/2", "success")]
    assert sum(d["read_rows"] for d in shards) == 10 and sum(d["sent"] for d in shards) == 5
    page = client.get("/report", params={"pipeline": "e2e_sharded", "day": "2024-03-10"}).text
    assert '<tr id="day-e2e_sharded-2024-03-10-shard-2-of-2" class="selected">' in page


def test_the_report_shows_the_newest_complete_dead_letters_after_a_partial_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dead letters on an object store: two complete runs (two versions), then a trial run (its
    partial file beside them). The day's row links the second version, and names the trial's."""
    home = tmp_path / "walkme_heap"
    home.mkdir()
    location = f"memory://report-{uuid.uuid4().hex[:12]}"
    window = resolve_window({}, datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC))
    path = str(DATA / "e2e" / "walkme_webhooks_{date:%Y-%m-%d}.csv")
    urls = []
    with HeapEmulator() as emulator:
        ledger = Ledger.sqlite(str(home / "ledger.db"))
        for limit in (None, None, 3):
            summary = replay(
                "versions",
                CsvSource(path, window),
                SPEC,
                window,
                HeapClient(emulator.url, "app"),
                ReplayOptions(max_invalid_ratio=0.5, row_limit=limit),
                ledger=ledger,
                dead_letters=DeadLetters(location, "versions", window.label),
            )
            urls.append(summary.dead_letters)
        ledger.close()
    complete, newest, partial = urls
    assert len({complete, newest, partial}) == 3
    version = r"2024-03-10\.\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}\.jsonl"
    assert re.fullmatch(rf"{location}/versions/{version}", newest), newest
    assert re.fullmatch(rf"{location}/versions/partial/{version}", partial), partial
    monkeypatch.setenv("WALKME_HEAP_HOME", str(home))
    client = client_as()
    (day,) = client.get("/api/days", params={"pipeline": "versions"}).json()["days"]
    assert (day["read_rows"], day["dead_letters"], day["partial_dead_letters"]) == (3, newest, partial)
    page = client.get("/report", params={"pipeline": "versions", "day": "2024-03-10"}).text
    cell = re.search(r'<td data-col="dead_letters">([^<]*)</td>', page)
    assert cell and cell.group(1).split("\n") == [newest, f"partial run: {partial}"]


def _day(label: str) -> Window:
    start = datetime.fromisoformat(label).replace(tzinfo=UTC)
    return Window(start, start + timedelta(days=1))


def _send(ledger: Ledger, pipeline: str, token: str | None, window: str, times: list[str]) -> None:
    """One acknowledged batch of events at ``times`` (``"2024-03-10T05:00"``), sent by the run
    ``token`` of ``window``'s day: those before that day are late arrivals."""
    stamps = format_ms(
        np.array([datetime.fromisoformat(t).replace(tzinfo=UTC).timestamp() * 1000 for t in times])
    )
    events = [{"timestamp": str(t), "idempotency_key": f"wmh1-{uuid.uuid4().hex}"} for t in stamps]
    late_before = format_ms(np.array([_day(window).start_ms]))[0]
    ledger.acks.record(pipeline, token, events, "app", late_before=str(late_before))


def _ran(
    ledger: Ledger, pipeline: str, window: str, past_bound: dict[str, int] | None, shard: str | None = None
) -> None:
    """A run of ``window`` (``shard``) that ended, with the events it found past the lateness bound
    (None: a record of a version that kept no late data)."""
    record = ledger.runs.start(pipeline, _day(window), f"scheduled__{window}", shard)
    late = None if past_bound is None else LateData(past_bound=past_bound)
    ledger.runs.finish(record, "success", {"read": 1}, None, "", late)


SCHEDULED_11 = "scheduled__2024-03-11T00:00:00+00:00"


def record_late_arrivals(ledger: Ledger, pipeline: str) -> None:
    """Event days of ``pipeline`` sent on time, late by several runs, and past the lateness bound."""
    _send(
        ledger,
        pipeline,
        "scheduled__2024-03-10T00:00:00+00:00#0a0a0a0a0a0a",
        "2024-03-10",
        ["2024-03-10T00:00", "2024-03-10T05:00", "2024-03-10T12:00", "2024-03-10T23:59:59.999"],
    )
    # the next day's run, in two shards (and a retry of one: another token), sends 03-10's stragglers
    _send(
        ledger,
        pipeline,
        f"{SCHEDULED_11}#1of2#1b1b1b1b1b1b",
        "2024-03-11",
        ["2024-03-10T22:00", "2024-03-10T23:00", "2024-03-11T01:00", "2024-03-11T02:00"],
    )
    _send(ledger, pipeline, f"{SCHEDULED_11}#2of2#2c2c2c2c2c2c", "2024-03-11", ["2024-03-11T03:00"])
    _send(ledger, pipeline, f"{SCHEDULED_11}#2of2#3d3d3d3d3d3d", "2024-03-11", ["2024-03-10T21:00"])
    _send(ledger, pipeline, "walkme-heap#4e4e4e4e4e4e", "2024-03-12", ["2024-03-10T20:00"])  # outside Airflow
    _send(ledger, pipeline, "manual__<b>x</b>#5f5f5f5f5f5f", "2024-03-11", ["2024-03-10T19:00"])
    # a row of a version that did not count late events: on time
    _send(ledger, pipeline, "old#6a6a6a6a6a6a", "2024-03-11", ["2024-03-09T10:00", "2024-03-09T11:00"])
    ledger.database.write(
        f"UPDATE {ACKS_TABLE.name} SET late_events = NULL WHERE pipeline = ? AND day = ?",
        [pipeline, "2024-03-09"],
    )
    _ran(ledger, pipeline, "2024-03-11", {"2024-03-08": 2, "2024-03-09": 1})
    _ran(ledger, pipeline, "2024-03-11", {"2024-03-08": 2})  # a re-run of the window: replaces
    ledger.runs.start(pipeline, _day("2024-03-11"), "manual__again", None)  # still running: keeps it
    _ran(ledger, pipeline, "2024-03-12", {"2024-03-08": 1})  # another window: adds
    _ran(ledger, pipeline, "2024-03-13", {"2024-03-10": 4}, "1/2")  # one per shard: adds
    _ran(ledger, pipeline, "2024-03-13", {"2024-03-10": 1}, "2/2")
    _ran(ledger, pipeline, "2024-03-14", None)  # an older version's record: nothing


EXPECTED_ARRIVALS = [  # (event day, on time, late, late by run)
    ("2024-03-09", 2, 0, {}),
    ("2024-03-10", 4, 5, {SCHEDULED_11: 3, None: 1, "manual__<b>x</b>": 1}),
    ("2024-03-11", 3, 0, {}),
]
EXPECTED_PAST_BOUND = [("2024-03-08", 3), ("2024-03-10", 5)]


def test_the_ledger_counts_each_event_days_late_arrivals(ledger: Ledger, pipeline: str) -> None:
    """SQLite and PostgreSQL alike: on time and late per Airflow run (shards and tries of one run are
    one), and past the bound per the newest record of each window and shard."""
    try:
        record_late_arrivals(ledger, pipeline)
        arrivals = [a for a in ledger.acks.arrivals_per_day() if a.pipeline == pipeline]
        assert arrivals == [DayArrivals(pipeline, d, n, late, runs) for d, n, late, runs in EXPECTED_ARRIVALS]
        assert list(arrivals[1].late_by_run) == [SCHEDULED_11, None, "manual__<b>x</b>"]  # in arrival order
        past_bound = [(d, n) for p, d, n in ledger.runs.past_bound_per_day() if p == pipeline]
        assert past_bound == EXPECTED_PAST_BOUND
    finally:
        for table in (ACKS_TABLE, RUNS_TABLE):  # PostgreSQL is shared by the tests
            ledger.database.write(f"DELETE FROM {table.name} WHERE pipeline = ?", [pipeline])


def test_the_report_shows_each_event_days_late_arrivals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "walkme_heap"
    home.mkdir()
    ledger = Ledger.sqlite(str(home / "ledger.db"))
    record_late_arrivals(ledger, "late")
    record_late_arrivals(ledger, "hidden")  # a pipeline whose DAG the user may not read
    ledger.close()
    monkeypatch.setenv("WALKME_HEAP_HOME", str(home))
    client = client_as(auth_manager=DagAuthManager({"walkme_to_heap_late"}))
    data = client.get("/api/days").json()
    assert data["event_days"] == [
        {"pipeline": "late", "day": d, "on_time": n, "late": late, "late_by_run": runs, "past_bound": past}
        for d, n, late, runs, past in [
            ("2024-03-08", 0, 0, [], 3),
            ("2024-03-09", 2, 0, [], 0),
            (
                "2024-03-10",
                4,
                5,
                [
                    {"run_id": SCHEDULED_11, "events": 3},
                    {"run_id": None, "events": 1},
                    {"run_id": "manual__<b>x</b>", "events": 1},
                ],
                5,
            ),
            ("2024-03-11", 3, 0, [], 0),
        ]
    ]
    page = client.get("/report", params={"day": "2024-03-10"}).text
    assert "hidden" not in page
    rows = re.findall(r'<tr id="event-day-late-([\d-]+)"( class="selected")?>(.*?)</tr>', page)
    assert [(day, bool(selected)) for day, selected, _ in rows] == [
        ("2024-03-11", False),
        ("2024-03-10", True),
        ("2024-03-09", False),
        ("2024-03-08", False),
    ]
    cells = dict(re.findall(r'<td data-col="(\w+)">(.*?)</td>', rows[1][2]))
    assert cells["on_time"] == "4"
    assert cells["late"] == (
        f'5<span class="by-run">by run {SCHEDULED_11}: 3</span><span class="by-run">by a run outside '
        'Airflow: 1</span><span class="by-run">by run manual__&lt;b&gt;x&lt;/b&gt;: 1</span>'
    )
    assert cells["past_bound"] == (
        '5<span class="hint">in the dead letters (later_than_lateness): the manual run the task log names '
        "replays them</span>"
    )
    assert "<b>x</b>" not in page
    cells = dict(re.findall(r'<td data-col="(\w+)">(.*?)</td>', rows[3][2]))
    assert (cells["on_time"], cells["late"], cells["past_bound"][:1]) == ("0", "0", "3")
    refused = client.get("/api/days", params={"pipeline": "hidden"})
    assert refused.status_code == 403


def _team_config(tmp_path: Path, ledger_conn_id: str) -> Path:
    config = tmp_path / "pipelines.yaml"
    config.write_text(
        "pipelines:\n"
        "  e2e:\n    start_date: 2024-03-10\n    source: {path: x.csv}\n"
        f"  team:\n    start_date: 2024-03-10\n    ledger_conn_id: {ledger_conn_id}\n"
        "    source: {path: x.csv}\n"
    )
    return config


def test_each_pipelines_own_ledger_is_read(
    report_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline with its own ``ledger_conn_id`` is reported from that ledger, beside the default."""
    team_home = tmp_path / "team"
    populate(team_home, pipeline="team", ledger_file="team.db")
    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(_team_config(tmp_path, "team_ledger")))
    monkeypatch.setenv(
        "AIRFLOW_CONN_TEAM_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(team_home / "team.db")})
    )
    client = client_as()
    data = client.get("/api/days").json()
    assert {d["pipeline"] for d in data["days"]} == {"e2e", "e2e_sharded", "team", "team_sharded"}
    (team,) = [d for d in data["days"] if d["pipeline"] == "team"]
    assert (team["read_rows"], team["sent"], team["already_sent"]) == (10, 0, 5)
    assert data["ledgers"] == [  # by connection id
        "connection 'team_ledger'",
        f"SQLite file {report_home / 'ledger.db'} (connection 'walkme_heap_ledger' is not defined)",
    ]
    assert data["notices"] == []
    page = client.get("/report").text
    assert "connection &#x27;team_ledger&#x27;" in page and '<tr id="day-team-2024-03-10">' in page


def test_two_connections_that_are_not_defined_are_one_ledger(
    report_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both fall back to the embedded SQLite file: it is read once, its events counted once."""
    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(_team_config(tmp_path, "not_defined_either")))
    data = client_as().get("/api/days").json()
    assert len(data["ledgers"]) == 1
    assert [(d["pipeline"], d["events"]) for d in data["sent_per_day"]] == [("e2e", 5), ("e2e_sharded", 5)]


def test_a_ledger_that_cannot_be_read_is_an_error_not_an_empty_report(
    report_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(_team_config(tmp_path, "team_ledger")))
    monkeypatch.setenv("AIRFLOW_CONN_TEAM_LEDGER", json.dumps({"conn_type": "fs"}))  # not SQL
    client = client_as()
    response = client.get("/api/days")
    assert response.status_code == 503
    assert response.json() == {
        "error": "the ledger connection 'team_ledger' is not a SQL connection: its hook FSHook is not a "
        "common-sql DbApiHook"
    }
    page = client.get("/report")
    assert page.status_code == 503 and "The report is not available: the ledger connection" in page.text
    outsider = client_as(auth_manager=DagAuthManager({"walkme_to_heap_other"}))  # may read neither
    for path in ("/api/days", "/report"):
        response = outsider.get(path)  # not told why the ledger cannot be read
        assert response.status_code == 403 and "team_ledger" not in response.text
    (tmp_path / "unreadable.db").write_text("not a database")
    monkeypatch.setenv(
        "AIRFLOW_CONN_TEAM_LEDGER",
        json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "unreadable.db")}),
    )
    response = client.get("/api/days")
    assert response.status_code == 503
    assert (
        "the ledger (connection 'team_ledger') cannot be read: file is not a database"
        in response.json()["error"]
    )

    def cannot_open(conn_id: str, connections: object) -> None:
        raise RuntimeError(f"no driver for {conn_id}")

    monkeypatch.setattr("walkme_heap.report.open_ledger", cannot_open)
    response = client.get("/api/days")
    assert response.status_code == 503
    assert response.json() == {"error": "a ledger cannot be opened: no driver for team_ledger"}


def test_without_the_pipelines_file_the_page_says_which_ledger_it_shows(
    report_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(tmp_path / "missing.yaml"))
    data = client_as().get("/api/days", params={"pipeline": "e2e"}).json()
    assert [d["window_label"] for d in data["days"]] == ["2024-03-10"]
    (notice,) = data["notices"]
    assert "could not be read, so only the ledger of connection 'walkme_heap_ledger' is shown" in notice
    page = client_as().get("/report").text
    assert '<p class="notice">The pipelines file' in page


class DagAuthManager(SimpleAuthManager):
    """An auth manager that lets its users read the DAGs in ``readable`` only, and records what it
    was asked (the simple auth manager cannot restrict a user to some DAGs)."""

    def __init__(self, readable: set[str]) -> None:
        super().__init__()
        self.readable = readable
        self.asked: set[str] = set()

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        self.asked.add(details.id)
        return method == "GET" and details.id in self.readable


def test_without_login_the_page_and_the_api_refuse(
    report_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    client = client_as(user=None)  # Airflow's own token check: no cookie, no bearer header
    response = client.get("/api/days", params={"pipeline": "e2e"})
    assert (response.status_code, response.json()) == (401, {"detail": "Not authenticated"})
    page = client.get("/report", params={"pipeline": "e2e", "day": "2024-03-10"})
    assert page.status_code == 401 and "day-e2e" not in page.text
    assert 'href="/auth/login?next=http%3A%2F%2Ftestserver%2Freport%3Fpipeline%3De2e' in page.text


def test_a_user_sees_only_the_pipelines_whose_dag_they_may_read(
    report_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    manager = DagAuthManager({"walkme_to_heap_e2e"})
    client = client_as(auth_manager=manager)
    data = client.get("/api/days").json()
    assert {d["pipeline"] for d in data["days"]} == {"e2e"}
    assert data["sent_per_day"] == [{"pipeline": "e2e", "day": "2024-03-10", "app_id": "app", "events": 5}]
    # each pipeline's DAG as the DAG factory names it: the configured ones and those in the ledger
    in_ledger = {"walkme_to_heap_e2e", "walkme_to_heap_e2e_sharded"}
    assert in_ledger <= set(build_dags(DATA / "e2e" / "pipelines.yaml"))
    assert manager.asked == set(build_dags()) | in_ledger
    page = client.get("/report").text
    assert '<tr id="day-e2e-2024-03-10">' in page and "e2e_sharded" not in page
    refused = client.get("/api/days", params={"pipeline": "e2e_sharded"})
    assert refused.status_code == 403 and "walkme_to_heap_e2e_sharded" in refused.json()["detail"]
    page = client.get("/report", params={"pipeline": "e2e_sharded", "day": "2024-03-10"})
    assert page.status_code == 403 and "day-e2e" not in page.text
    assert "You may not read the DAG walkme_to_heap_e2e_sharded" in page.text

    nothing = client_as(auth_manager=DagAuthManager(set()))
    assert nothing.get("/api/days").status_code == 403
    page = nothing.get("/report")
    assert page.status_code == 403 and "day-e2e" not in page.text and "Ledger:" not in page.text


def _open_files(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd) == str(path)
    return count


@pytest.fixture
def ledger_connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The databases SQLite connections are opened to, from now on."""
    opened: list[str] = []
    connect = sqlite3.connect

    def counting(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(str(database))
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", counting)
    return opened


def test_the_ledger_is_opened_once_for_the_apps_lifetime(
    report_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger_connects: list[str]
) -> None:
    home = shutil.copytree(report_home, tmp_path / "walkme_heap")  # a file no other test's app has open
    monkeypatch.setenv("WALKME_HEAP_HOME", str(home))
    ledger_file = home / "ledger.db"
    with client_as() as client:  # runs the app's lifespan, as the API server does
        for _ in range(3):
            assert client.get("/api/days").status_code == 200
        assert client.get("/report", params={"pipeline": "e2e"}).status_code == 200
        assert ledger_connects.count(str(ledger_file)) == 1
        assert _open_files(ledger_file) == 1  # kept open between requests
    assert _open_files(ledger_file) == 0  # closed when the API server stops


def test_concurrent_requests_share_the_ledger(
    report_home: Path, monkeypatch: pytest.MonkeyPatch, ledger_connects: list[str]
) -> None:
    """FastAPI answers on a pool of threads, and a SQLite connection belongs to the thread that opened it."""
    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    client = client_as()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.get("/api/days"), range(24)))
    assert [a.status_code for a in answers] == [200] * 24, answers[0].text
    assert {len(a.json()["days"]) for a in answers} == {3}
    assert ledger_connects.count(str(report_home / "ledger.db")) == 1


def test_a_ledger_that_failed_is_opened_afresh(
    report_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger_connects: list[str]
) -> None:
    team_file = tmp_path / "team.db"
    team_file.write_text("not a database")
    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(_team_config(tmp_path, "team_ledger")))
    monkeypatch.setenv(
        "AIRFLOW_CONN_TEAM_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(team_file)})
    )
    client = client_as()
    assert client.get("/api/days").status_code == 503
    populate(tmp_path / "team", pipeline="team", ledger_file="team.db")
    os.replace(tmp_path / "team" / "team.db", team_file)  # a new file: an old connection would not see it
    for _ in range(2):
        data = client.get("/api/days").json()
        assert "team" in {d["pipeline"] for d in data["days"]}
    assert len([c for c in ledger_connects if str(team_file) in c]) == 2  # failed once, opened afresh once


# The API server's users (simple auth manager): a viewer may read every DAG; a user without a role is
# authenticated but may read none.
PASSWORDS = {"viewer": "viewer-password", "nobody": "nobody-password"}


@pytest.fixture(scope="module")
def api_server(report_home: Path, airflow_db: Path) -> Iterator[str]:
    """Airflow's own API server, with this project's plugin and the simple auth manager's users, on a
    free loopback port."""
    passwords = report_home.parent / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    env = {
        **os.environ,
        "WALKME_HEAP_HOME": str(report_home),
        "AIRFLOW__CORE__AUTH_MANAGER": f"{SimpleAuthManager.__module__}.{SimpleAuthManager.__name__}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "viewer:viewer,nobody:",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
    }
    with running_api_server(
        [sys.executable, "-m", "airflow"], env, report_home.parent / "api-server.log"
    ) as url:
        yield url


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET ``url``: the status and the body, also of a refusal."""
    try:
        with urlopen(Request(url, headers=headers or {}), timeout=30) as response:
            return response.status, response.read().decode()
    except HTTPError as exc:
        return exc.code, exc.read().decode()


def shows_runs(body: str) -> bool:
    """Whether a page or JSON answer shows run records (a row of the table, or the API's days)."""
    return 'data-col="' in body or '"days"' in body


def log_in(api_server: str, username: str) -> str:
    """A token for ``username`` as the Airflow UI gets one: ``POST /auth/token`` with the password."""
    body = json.dumps({"username": username, "password": PASSWORDS[username]}).encode()
    request = Request(f"{api_server}/auth/token", body, {"Content-Type": "application/json"}, method="POST")
    with urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.load(response)["access_token"]


def test_the_api_server_refuses_the_report_without_login(api_server: str) -> None:
    page = f"{api_server}/walkme-heap/report?pipeline=e2e&day=2024-03-10"
    api = f"{api_server}/walkme-heap/api/days?pipeline=e2e"
    status, body = fetch(api)
    assert (status, json.loads(body)) == (401, {"detail": "Not authenticated"})
    status, body = fetch(page)
    assert status == 401 and not shows_runs(body)
    assert f'href="/auth/login?next={quote(page, safe="")}"' in body
    for forged in ({"Authorization": "Bearer forged"}, {"Cookie": f"{COOKIE_NAME_JWT_TOKEN}=forged"}):
        for url in (api, page):
            status, body = fetch(url, forged)
            assert status in (401, 403) and not shows_runs(body), (forged, url, body)


def test_a_logged_in_user_reads_the_report_in_the_api_server_if_they_may_read_the_dag(
    api_server: str,
) -> None:
    viewer = log_in(api_server, "viewer")
    status, body = fetch(
        f"{api_server}/walkme-heap/api/days?pipeline=e2e", {"Authorization": f"Bearer {viewer}"}
    )
    assert status == 200, body
    (day,) = json.loads(body)["days"]
    assert (day["window_label"], day["sent"], day["already_sent"]) == ("2024-03-10", 0, 5)
    status, body = fetch(f"{api_server}/walkme-heap/report", {"Cookie": f"{COOKIE_NAME_JWT_TOKEN}={viewer}"})
    assert status == 200 and '<tr id="day-e2e-2024-03-10">' in body

    nobody = log_in(api_server, "nobody")  # authenticated, but may read no DAG
    for path in ("/walkme-heap/api/days", "/walkme-heap/api/days?pipeline=e2e", "/walkme-heap/report"):
        status, body = fetch(f"{api_server}{path}", {"Authorization": f"Bearer {nobody}"})
        assert status == 403 and not shows_runs(body), (path, body)


class _CookieSetter(BaseHTTPRequestHandler):
    """Puts a token in the browser's ``_token`` cookie, as the Airflow UI's login does, then sends the
    browser on to ``/go?<url>``. Cookies are per host, not per port: the API server receives it."""

    token = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header(
            "Set-Cookie", f"{COOKIE_NAME_JWT_TOKEN}={self.token}; Path=/; HttpOnly; SameSite=Lax"
        )
        self.send_header("Location", self.path.partition("?")[2])
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def browser_login(api_server: str) -> Iterator[str]:
    """A URL prefix that logs the browser in as the viewer and then opens the URL appended to it."""
    handler = type("ViewerCookie", (_CookieSetter,), {"token": log_in(api_server, "viewer")})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/go?"
    server.shutdown()
    server.server_close()


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is required under CI=true (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium on this machine")
    return path


BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.e2e
def test_the_report_in_the_airflow_ui_shows_the_days_counts(
    api_server: str, browser_login: str, tmp_path: Path
) -> None:
    browser = chromium()
    page = browser_login + f"{api_server}/walkme-heap/report?pipeline=e2e&day=2024-03-10"
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    row = re.search(r'<tr id="day-e2e-2024-03-10" class="selected">(.*?)</tr>', dom, re.S)
    assert row, dom[-2000:]
    cells = dict(re.findall(r'<td data-col="(\w+)">([^<]*)</td>', row.group(1)))
    assert (
        cells["read_rows"],
        cells["sent"],
        cells["already_sent"],
        cells["invalid"],
        cells["skipped"],
        cells["status"],
    ) == ("10", "0", "5", "2", "3", "success")
    screenshot = Path(os.environ.get("WALKME_HEAP_SCREENSHOTS", tmp_path)) / "replay-report.png"
    subprocess.run(
        [
            browser,
            *BROWSER_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={screenshot}",
            "--window-size=1100,700",
            page,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {screenshot}")
