"""Shared fixtures. Airflow is pointed at a throw-away home before anything imports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="walkme-heap-tests-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
)
os.environ.pop("WALKME_HEAP_CONFIG", None)
os.environ.pop("WALKME_HEAP_HOME", None)
os.environ.pop("AIRFLOW_CONN_HEAP_DEFAULT", None)

from tests.helpers import mariadb_ledger, postgres_ledger  # noqa: E402
from walkme_heap.emulator import EmulatorSettings, HeapEmulator  # noqa: E402
from walkme_heap.ledger import Ledger  # noqa: E402


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """An initialised SQLite metadata database, migrated once for the whole session."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return _HOME


@pytest.fixture
def emulator() -> Iterator[HeapEmulator]:
    """A fresh Heap emulator on a free loopback port, with Heap's documented limits."""
    with HeapEmulator(settings=EmulatorSettings()) as server:
        yield server


@pytest.fixture
def heap_connection(emulator: HeapEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> HeapEmulator:
    """``heap_default`` pointing at the emulator, as an AIRFLOW_CONN_ variable; a fresh ledger and
    dead-letter location (``WALKME_HEAP_HOME``) for each test."""
    monkeypatch.setenv("WALKME_HEAP_HOME", str(tmp_path / "walkme_heap"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_HEAP_DEFAULT",
        json.dumps({"conn_type": "heap", "host": emulator.url, "login": "test-app"}),
    )
    return emulator


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger in SQLite, then in PostgreSQL, then in MariaDB (a server that is not there skips,
    unless CI=true)."""
    if request.param == "sqlite":
        store = Ledger.sqlite(str(tmp_path / "ledger.db"))
    else:
        store = postgres_ledger() if request.param == "postgres" else mariadb_ledger()
    yield store
    store.close()


@pytest.fixture
def pipeline() -> str:
    """A pipeline name of its own: tests sharing the PostgreSQL or MariaDB ledger do not see each
    other."""
    return f"test_{uuid.uuid4().hex[:10]}"
