"""The replay report: its data and page, and the page served by Airflow's API server in Chromium."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.request import urlopen

import pytest

from tests.conftest import DATA
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


def populate(home: Path) -> None:
    """Two replays of the end-to-end fixture day (the second sends nothing) into ``home``'s ledger."""
    home.mkdir(parents=True, exist_ok=True)
    window = resolve_window({}, datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC))
    path = str(DATA / "e2e" / "walkme_webhooks_{date:%Y-%m-%d}.csv")
    with HeapEmulator() as emulator:
        for _ in range(2):
            ledger = Ledger.sqlite(str(home / "ledger.db"))
            replay(
                "e2e",
                CsvSource(path, window),
                SPEC,
                window,
                HeapClient(emulator.url, "app"),
                ReplayOptions(max_invalid_ratio=0.5),
                ledger=ledger,
                dead_letters=DeadLetters(str(home / "dead_letters"), "e2e", window.label),
            )
            ledger.close()
        ledger = Ledger.sqlite(str(home / "ledger.db"))
        for index in range(2):  # a sharded day: one run record per shard
            replay(
                "e2e_sharded",
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
