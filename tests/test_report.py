"""The replay report: its data and page, and the page served by Airflow's API server in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.request import urlopen

import pytest

from tests.helpers import DATA, free_port
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.emulator import HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.report import create_app
from walkme_heap.sharding import Shard
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.window import resolve_window

SPEC = MappingSpec(event_name=EventNameSpec(event_type="complete"))


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


def test_report_page_and_api(report_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    client = TestClient(create_app())
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
    assert data["sent_per_day"] == [{"pipeline": "e2e", "day": "2024-03-10", "events": 5}]
    page = client.get("/report", params={"pipeline": "e2e", "day": "2024-03-10"}).text
    assert '<tr id="day-e2e-2024-03-10" class="selected">' in page
    assert '<td data-col="already_sent">5</td>' in page and "<svg" in page
    assert "No replays recorded yet" in client.get("/report", params={"pipeline": "other"}).text
    shards = client.get("/api/days", params={"pipeline": "e2e_sharded"}).json()["days"]
    assert [(d["shard"], d["status"]) for d in shards] == [("1/2", "success"), ("2/2", "success")]
    assert sum(d["read_rows"] for d in shards) == 10 and sum(d["sent"] for d in shards) == 5
    page = client.get("/report", params={"pipeline": "e2e_sharded", "day": "2024-03-10"}).text
    assert '<tr id="day-e2e_sharded-2024-03-10-shard-2-of-2" class="selected">' in page


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
    from fastapi.testclient import TestClient

    team_home = tmp_path / "team"
    populate(team_home, pipeline="team", ledger_file="team.db")
    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(_team_config(tmp_path, "team_ledger")))
    monkeypatch.setenv(
        "AIRFLOW_CONN_TEAM_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(team_home / "team.db")})
    )
    client = TestClient(create_app())
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
    from fastapi.testclient import TestClient

    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(_team_config(tmp_path, "not_defined_either")))
    data = TestClient(create_app()).get("/api/days").json()
    assert len(data["ledgers"]) == 1
    assert [(d["pipeline"], d["events"]) for d in data["sent_per_day"]] == [("e2e", 5), ("e2e_sharded", 5)]


def test_a_ledger_that_cannot_be_read_is_an_error_not_an_empty_report(
    report_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(_team_config(tmp_path, "team_ledger")))
    monkeypatch.setenv("AIRFLOW_CONN_TEAM_LEDGER", json.dumps({"conn_type": "fs"}))  # not SQL
    client = TestClient(create_app())
    response = client.get("/api/days")
    assert response.status_code == 503
    assert response.json() == {
        "error": "the ledger connection 'team_ledger' is not a SQL connection: its hook FSHook is not a "
        "common-sql DbApiHook"
    }
    page = client.get("/report")
    assert page.status_code == 503 and "The report is not available: the ledger connection" in page.text
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
    from fastapi.testclient import TestClient

    monkeypatch.setenv("WALKME_HEAP_HOME", str(report_home))
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(tmp_path / "missing.yaml"))
    data = TestClient(create_app()).get("/api/days", params={"pipeline": "e2e"}).json()
    assert [d["window_label"] for d in data["days"]] == ["2024-03-10"]
    (notice,) = data["notices"]
    assert "could not be read, so only the ledger of connection 'walkme_heap_ledger' is shown" in notice
    page = TestClient(create_app()).get("/report").text
    assert '<p class="notice">The pipelines file' in page


@pytest.fixture(scope="module")
def api_server(report_home: Path, airflow_db: Path) -> Iterator[str]:
    """Airflow's own API server, with this project's plugin, on a free loopback port."""
    port = free_port()
    log = open(report_home.parent / "api-server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow",
            "api-server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env={**os.environ, "WALKME_HEAP_HOME": str(report_home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urlopen(f"{url}/walkme-heap/api/days", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    pytest.fail(
                        "the API server did not start:\n"
                        + (report_home.parent / "api-server.log").read_text()[-3000:]
                    )
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


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
def test_the_report_in_the_airflow_ui_shows_the_days_counts(api_server: str, tmp_path: Path) -> None:
    browser = chromium()
    page = f"{api_server}/walkme-heap/report?pipeline=e2e&day=2024-03-10"
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
