"""What several test modules share: the test day's export, the emulator's state, PostgreSQL and
MariaDB, the ledger's records, a fake clock. Fixtures live in conftest.py; nothing here starts anything."""

from __future__ import annotations

import csv
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import requests

from devtools.sample_warehouse import created_ms
from walkme_heap.deadletters import DeadLetters
from walkme_heap.dedupe import SeenKeys
from walkme_heap.delivery.budget import Usage
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.sender import RetryPolicy
from walkme_heap.emulator import HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.ledger import budget as budget_store
from walkme_heap.ledger import runs as runs_store
from walkme_heap.mapping.columns import bind_columns
from walkme_heap.mapping.keys import key_hashes
from walkme_heap.mapping.mapper import Mapper
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.summary import ReplaySummary
from walkme_heap.window import Window

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
# The local MariaDB (also MySQL's place in the tests), through PyMySQL: pure Python, so a fresh
# machine needs no MySQL client headers (the MySQL provider's mysqlclient builds against them).
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "test"}
MARIADB_URI = "mysql://root@127.0.0.1:3306/test"

# -- the test day: a CSV export of webhook payloads ----------------------------------------------------
DAY = Window(datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC))
SPEC = MappingSpec(event_name=EventNameSpec(event_type="complete"))
HEADER = ["wm.euId", "created_at", "type", "oType", "oId", "sId", "ctx.title"]
FAST_RETRIES = RetryPolicy(base_seconds=0.02, max_backoff_seconds=0.2, max_seconds=20)


def write_day(
    path: Path, count: int, *, first: int = 0, invalid: int = 6, start_ms: int = DAY.start_ms
) -> Path:
    """``count`` valid rows over 40 identities (one heavy), plus ``invalid`` bad rows."""
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(HEADER)
        for n in range(first, first + count):
            identity = "heavy-user" if n % 4 == 0 else f"user-{n % 39:02d}"
            when = start_ms + n * 97_000 % 86_400_000
            writer.writerow([identity, when, "play", "wt", str(1000 + n % 7), f"s-{n}", f"Page {n} ü"])
        for n in range(invalid if new else 0):
            writer.writerow(["null" if n % 2 else "", start_ms + n, "play", "wt", "1", "s", "t"])
    return path


def replay_csv(
    emulator: HeapEmulator,
    ledger: Ledger | None,
    path: Path,
    tmp_path: Path | None,
    pipeline: str,
    *,
    window: Window = DAY,
    read_timeout: float = 5.0,
    app: str = "app",
    client: HeapClient | None = None,
    **options: object,
) -> ReplaySummary:
    """Replay a CSV export of ``window`` into the emulator (50-event batches, fast retries, up to
    half the rows invalid), with dead letters under ``tmp_path`` when one is given."""
    client = client or HeapClient(emulator.url, app, connect_timeout=2, read_timeout=read_timeout)
    letters = DeadLetters(str(tmp_path / "dead"), pipeline, window.label) if tmp_path else None
    settings = {"max_events": 50, "retry": FAST_RETRIES, "max_invalid_ratio": 0.5, **options}
    try:
        return replay(
            pipeline,
            CsvSource(str(path), window, chunk_rows=100),
            SPEC,
            window,
            client,
            ReplayOptions(**settings),  # type: ignore[arg-type]
            ledger=ledger,
            dead_letters=letters,
        )
    finally:
        client.close()


def expected_keys(path: Path, window: Window = DAY) -> set[str]:
    """The keys of every valid event of an export, mapped outside any replay."""
    source = CsvSource(str(path), window)
    mapper = Mapper(SPEC, bind_columns(SPEC, source.headers(str(path)), "x"))
    return {
        e["idempotency_key"]
        for c in source.chunks(str(path))
        for e in mapper.map_chunk(c.frame, window.start_ms, window.end_ms).events
    }


# -- the emulator ---------------------------------------------------------------------------------------
GOOD_EVENT = {  # an event every rule of the contract accepts
    "identity": "u1",
    "event": "E",
    "timestamp": "2024-03-10T00:00:00.000+00:00",
    "idempotency_key": "wmh1-0123456789abcdef",
    "properties": {"a": "b", "n": 1.5},
}


def received(emulator: HeapEmulator) -> list[dict]:
    with emulator.state.lock:
        return [dict(e) for e in emulator.state.events]


def configure(emulator: HeapEmulator, **changes: object) -> None:
    response = requests.post(f"{emulator.url}/_emulator/config", json=changes, timeout=5)
    assert response.status_code == 200, response.text


def stats(emulator: HeapEmulator) -> dict:
    return requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()


def identity_events(identity: str, count: int, start: int = 0) -> list[dict]:
    """``count`` minimal events of one identity, keyed in order (pacing and sending tests)."""
    return [
        {"identity": identity, "event": "E", "idempotency_key": f"k-{identity}-{start + i:06d}"}
        for i in range(count)
    ]


class OthersUsage:
    """What other runs sent into the app recently, as a ledger would answer (set ``sent``, and per
    identity hash ``identities``: [(seconds until it leaves the window, events)]), and every window
    length it was asked for."""

    def __init__(self, sent: int) -> None:
        self.sent = sent
        self.identities: dict[int, list[tuple[float, int]]] = {}
        self.asked: list[float] = []

    def __call__(self, seconds: float) -> Usage:
        self.asked.append(seconds)
        return Usage(self.sent, dict(self.identities))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeClock:
    """One made-up time for everything a test drives: ``monotonic`` (also the clock called as a
    function) and ``time`` advance together, and only by ``sleep``, so waits take no real time and
    durations are exact. ``sleeps`` lists every wait."""

    def __init__(self, start: float = 1000.0, epoch: float = 1_700_000_000.0) -> None:
        self._now = start
        self._epoch = epoch - start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.monotonic()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time(self) -> float:
        with self._lock:
            return self._epoch + self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            self.sleeps.append(seconds)

    def advance(self, seconds: float) -> None:
        """Time passes without anyone waiting (another process's work)."""
        with self._lock:
            self._now += seconds


# -- PostgreSQL -----------------------------------------------------------------------------------------
def postgres_connection() -> Any:
    """A psycopg connection to the local server; skip without one, unless CI requires it."""
    import psycopg

    try:
        return psycopg.connect(PG_DSN, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must be reachable under CI=true: {exc}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")


def postgres_ledger() -> Ledger:
    """A ledger in the local PostgreSQL (skips without a server, unless CI requires it)."""
    import psycopg

    postgres_connection().close()
    return Ledger(lambda: psycopg.connect(PG_DSN), "%s")


# -- MariaDB --------------------------------------------------------------------------------------------
def mariadb_connect(database: str = MARIADB["database"]) -> Any:
    """A new PyMySQL connection to the local server (no skip: for a ledger's ``connect``)."""
    import pymysql

    return pymysql.connect(**{**MARIADB, "database": database}, connect_timeout=3)


def mariadb_connection() -> Any:
    """A connection to the local MariaDB; skip without one, unless CI requires it."""
    import pymysql

    try:
        return mariadb_connect()
    except pymysql.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"MariaDB must be reachable under CI=true: {exc}")
        pytest.skip(f"no MariaDB at 127.0.0.1:3306: {exc}")


def mariadb_ledger(**options: Any) -> Ledger:
    """A ledger in the local MariaDB (skips without a server, unless CI requires it)."""
    mariadb_connection().close()
    return Ledger(mariadb_connect, "%s", **options)


def load_postgres(rows: list[dict[str, Any]], table: str) -> None:
    """A timestamptz time column and a JSONB payload, loaded with COPY."""
    with postgres_connection() as db, db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ, payload JSONB)")
        with cur.copy(f"COPY {table} (created_at, payload) FROM STDIN") as copy:
            for r in rows:
                ms = created_ms(r)
                when = datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None
                copy.write_row((when, json.dumps(r, ensure_ascii=False)))


# -- a database of a test's own ------------------------------------------------------------------------
DATABASE_KINDS = ["sqlite", "postgres", "mariadb"]


@contextmanager
def scratch_database(kind: str, tmp_path: Path) -> Iterator[tuple[Callable[[], Any], str]]:
    """(connect, placeholder) of an empty database of ``kind`` (a SQLite file, or a new database on
    the local PostgreSQL or MariaDB, dropped afterwards; those skip without a server unless CI=true)."""
    if kind == "sqlite":
        path = tmp_path / f"scratch-{uuid.uuid4().hex[:8]}.db"
        yield (lambda: sqlite3.connect(path, timeout=30)), "?"
        return
    name = f"walkme_heap_scratch_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    if kind == "postgres":
        import psycopg

        postgres_connection().close()
        admin_dsn = PG_DSN.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            yield (lambda: psycopg.connect(f"{admin_dsn.rsplit('/', 1)[0]}/{name}")), "%s"
        finally:
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        return
    admin = mariadb_connection()
    try:
        admin.cursor().execute(f"CREATE DATABASE {name}")
        yield (lambda: mariadb_connect(name)), "%s"
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def ledger_schema(connect: Callable[[], Any]) -> dict[str, tuple[set[str], set[str]]]:
    """The ledger's tables in a database, as it holds them: name -> (columns, index names)."""
    import sqlalchemy as sa

    from walkme_heap.ledger.database import dialect_of

    probe = connect()
    url = f"{dialect_of(probe).sqlalchemy}://"
    probe.close()
    engine = sa.create_engine(url, creator=connect, poolclass=sa.pool.NullPool)
    try:
        inspector = sa.inspect(engine)
        return {
            name: (
                {c["name"] for c in inspector.get_columns(name)},
                {str(i["name"]) for i in inspector.get_indexes(name)},
            )
            for name in inspector.get_table_names()
            if name.startswith("walkme_heap_")
        }
    finally:
        engine.dispose()


def declared_schema() -> dict[str, tuple[set[str], set[str]]]:
    """The ledger's tables as this version declares them: name -> (columns, index names)."""
    from walkme_heap.ledger import TABLES

    return {t.name: ({c.name for c in t.columns}, {str(i.name) for i in t.indexes}) for t in TABLES}


# -- what the product keeps, read the way a test wants it -----------------------------------------------
def run_in_threads(worker: Callable[[int], None], count: int, timeout: float = 120) -> None:
    """``worker(0)`` .. ``worker(count - 1)`` at once, each in a thread; back when all ended."""
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)


def open_ledger_of_kind(kind: str, sqlite_path: str) -> Ledger:
    """The ledger a test's child process opens: the parent's database (``postgres``, ``mysql``, or
    the SQLite file at ``sqlite_path``)."""
    if kind == "postgres":
        import psycopg

        return Ledger(lambda: psycopg.connect(PG_DSN), "%s")
    if kind == "mysql":
        return Ledger(mariadb_connect, "%s")
    return Ledger.sqlite(sqlite_path)


def run_records(ledger: Ledger, pipeline: str) -> list[dict[str, Any]]:
    """A pipeline's run records, newest first."""
    return ledger.database.fetch_records(
        f"SELECT * FROM {runs_store.TABLE.name} WHERE pipeline = ? ORDER BY id DESC", [pipeline]
    )


def budget_used(ledger: Ledger, app_id: str, window: float, now: float) -> int:
    """Events the app's reservations count against it at ``now``."""
    rows = ledger.database.fetch(
        f"SELECT stamp_epoch, events FROM {budget_store.TABLE.name} WHERE app_id = ?", [app_id]
    )
    return sum(int(n) for t, n in rows if float(t) > now - window)


def first_occurrences(seen: SeenKeys, keys: list[str]) -> list[bool]:
    return seen.first_occurrences(key_hashes(keys)).tolist()


def dead_letters(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@contextmanager
def running_api_server(airflow: list[str], env: dict[str, str], log_path: Path) -> Iterator[str]:
    """``airflow api-server`` (``airflow``: the command that runs Airflow) on a free loopback port,
    its output in ``log_path``; its URL once it answers its health check (within 180 s)."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    urlopen(f"{url}/api/v2/monitor/health", timeout=2).read()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("the API server did not start:\n" + log_path.read_text()[-3000:])
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)
