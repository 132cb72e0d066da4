"""``python3 dev.py ui`` as a newcomer uses it: a fresh Airflow home started by the command (the
emulator and the Heap connection included), log in, trigger a sample day with the trigger form's own
fields, wait for it, open the replay report from the navigation and read that day's counts, check the
emulator holds the day's events once; then Ctrl-C, and no process the command started is left."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import psutil
import pytest

from tests.browser import Browser
from tests.helpers import ROOT, free_port
from tests.test_report import BROWSER_FLAGS, chromium

pytestmark = pytest.mark.e2e
DAG_ID = "walkme_to_heap_sample_webhooks"
DAY_EVENTS = 486  # the sample's 2024-03-10 file: events sent (5 of them late ones of 03-09)
NEXT_DAY_EVENTS = 366  # the 2024-03-11 file's


class UiSession:
    """``python3 dev.py ui`` on a fresh home, as a user's terminal runs it."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        fresh = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "WALKME_HEAP"))}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "dev.py"), "ui", "--home", str(home), "--port", str(self.port)],
            env=fresh,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            banner = self._read_until("Ctrl-C stops everything.", timeout=300)
        except BaseException:
            self.kill()
            raise
        self.url = re.search(r"Airflow is ready: (\S+)", banner).group(1)  # type: ignore[union-attr]
        self.password = re.search(r"log in as\s+admin / (\S+)", banner).group(1)  # type: ignore[union-attr]
        self.emulator = re.search(r"the bundled emulator at (\S+)", banner).group(1)  # type: ignore[union-attr]

    def _read_until(self, marker: str, timeout: float) -> str:
        """The command's output up to the line holding ``marker`` (a thread reads the pipe: a
        buffered reader may hold lines a poll of the pipe does not see)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(marker in line for line in self.output):
                return "".join(self.output)
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.2)
        log = (
            (self.home / "ui.log").read_text(errors="replace")[-4000:]
            if (self.home / "ui.log").exists()
            else ""
        )
        raise AssertionError(f"no {marker!r} from the ui command:\n{''.join(self.output)}\n{log}")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def emulator_stats(self) -> dict[str, Any]:
        with urlopen(f"{self.emulator}/_emulator/stats", timeout=10) as answer:
            return dict(json.load(answer))

    def runs(self) -> list[tuple[str, str, str]]:
        with sqlite3.connect(self.home / "airflow.db") as db:
            return db.execute(
                f"SELECT run_id, run_type, state FROM dag_run WHERE dag_id = '{DAG_ID}'"
            ).fetchall()

    def descendants(self) -> set[int]:
        """Every process below the command's (its Airflow components, their workers, the emulator)."""
        return {child.pid for child in psutil.Process(self.process.pid).children(recursive=True)}

    def interrupt(self) -> str:
        """Ctrl-C, as a terminal sends it; the command's output to its end."""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=120)
        self._reader.join(timeout=30)
        return "".join(self.output)

    def kill(self) -> None:
        """After a failure: Ctrl-C first (the command stops what it started), then SIGKILL to every
        process it started, which live in sessions of their own."""
        if self.process.poll() is not None:
            return
        started = self.descendants()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for its parent to read it does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiSession]:
    chromium()  # fails under CI=true without Chromium, before Airflow is started
    ui = UiSession(tmp_path_factory.mktemp("ui-home"))
    try:
        yield ui
    finally:
        ui.kill()


def test_a_newcomer_replays_a_sample_day_from_the_trigger_form_and_reads_the_report(
    session: UiSession, tmp_path: Path
) -> None:
    with Browser(chromium(), BROWSER_FLAGS) as browser:
        browser.open(session.url)
        browser.wait_for("!!document.querySelector('input[name=username]')", what="the login page")
        browser.type("input[name=username]", "admin")
        browser.type("input[name=password]", session.password)
        browser.click("button[type=submit]")
        browser.wait_for("!location.pathname.startsWith('/auth')", what="the login to succeed")

        browser.open(f"{session.url}/dags/{DAG_ID}")
        browser.wait_for(
            "!!document.querySelector('button[aria-label=\"Trigger Dag\"]')", what="the DAG page"
        )
        browser.click('button[aria-label="Trigger Dag"]')
        browser.wait_for(
            "!!document.querySelector('input[name=element_start]')", what="the trigger form's fields"
        )
        browser.type("input[name=element_start]", "2024-03-10")
        browser.type("input[name=element_end]", "2024-03-11")
        # the form as it comes: not a dry run, and "Unpause ... on trigger" ticked (DAGs start paused)
        assert browser.js("document.querySelector('input[name=element_dry_run]').checked") is False
        assert browser.js(
            "Array.from(document.querySelectorAll('[role=dialog] label')).find("
            "l => l.innerText.includes('on trigger')).querySelector('input').checked"
        )
        browser.click_text("[role=dialog] button", "Trigger")

        # The form's run, and the scheduled runs of the two sample days the unpause lets the scheduler
        # create (one at a time: it creates them once the form's run is done): all of them ended.
        deadline = time.monotonic() + 300
        while True:
            runs = session.runs()
            manual = [r for r in runs if r[1] == "manual"]
            scheduled = [r for r in runs if r[1] == "scheduled"]
            if len(manual) == 1 and len(scheduled) == 2 and all(r[2] in ("success", "failed") for r in runs):
                break
            assert time.monotonic() < deadline, (
                f"runs {runs}\n{(session.home / 'ui.log').read_text()[-4000:]}"
            )
            time.sleep(2)
        assert {state for _, _, state in runs} == {"success"}, runs
        conf = (
            sqlite3.connect(session.home / "airflow.db")
            .execute("SELECT conf FROM dag_run WHERE run_type = 'manual'")
            .fetchone()[0]
        )
        assert '"start": "2024-03-10"' in str(conf) and '"end": "2024-03-11"' in str(conf)

        browser.click_text("button", "Browse")
        browser.wait_for(
            "!!Array.from(document.querySelectorAll('[role=menuitem]')).find("
            "e => e.innerText.trim() === 'WalkMe to Heap replays')",
            what="the report's entry under Browse",
        )
        browser.click_text("[role=menuitem]", "WalkMe to Heap replays")
        frame = "document.querySelector('iframe')"
        row = f"{frame}.contentDocument.querySelector('#day-sample_webhooks-2024-03-10')"
        browser.wait_for(f"!!{frame} && !!{row}", what="the report's row of 2024-03-10")
        cells = browser.js(
            f"Object.fromEntries(Array.from({row}.querySelectorAll('td'))"
            ".map(c => [c.dataset.col, c.innerText]))"
        )
        assert (cells["status"].lower(), cells["read_rows"], cells["invalid"], cells["skipped"]) == (
            "success",
            "497",
            "7",
            "4",
        ), cells
        assert int(cells["sent"]) + int(cells["already_sent"]) == DAY_EVENTS, cells
        updated, unchanged, refused = (int(n) for n in cells["users"].split(" / "))
        assert (updated + unchanged, refused) == (40, 0), cells
        screenshot = Path(os.environ.get("WALKME_HEAP_SCREENSHOTS", tmp_path)) / "report-page.png"
        browser.screenshot(screenshot)
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    stats = session.emulator_stats()
    # the two sample days' events (486 and 366) exactly once, whichever run sent 2024-03-10 first
    assert (stats["unique_events"], stats["accepted_events"], stats["duplicate_events"]) == (
        DAY_EVENTS + NEXT_DAY_EVENTS,
        DAY_EVENTS + NEXT_DAY_EVENTS,
        0,
    ), stats


def test_ctrl_c_stops_everything_the_command_started(session: UiSession) -> None:
    started = session.descendants()
    assert len(started) >= 5, started  # scheduler, DAG processor, triggerer, API server, emulator ...
    output = session.interrupt()
    assert session.process.returncode == 0, output
    assert "Stopped: no process of this session is left." in output, output
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if alive(pid)], output
