"""The replay's output, pinned byte for byte: the request bodies, the dead letters and the counts
of a replay of each test export (the bundled sample day, the hostile CSV and JSON Lines day and the
benchmark's generated export).

A faster hot path must change none of it: Heap ignores a repeated idempotency key and cannot update
an event, so a body that differs by one byte for an event already sent is a second event or a
changed one that never arrives. The digests were taken from the code before the columnar work
(issue 17); a change here is a change of what users' replays send, never a refactoring detail.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from scripts import bench  # the generator of the export the benchmark's targets are measured on
from tests.helpers import DAY, ROOT
from tests.test_hostile_export import SPEC as HOSTILE_SPEC
from tests.test_hostile_export import normal_day, write_csv, write_jsonl
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.mapping.spec import MappingSpec
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.sources.jsonl_files import JsonLinesSource
from walkme_heap.window import Window

HOSTILE_INVALID = [("identity_not_text", 3), ("malformed_row", 3), ("missing_identity", 6)]
NO_DEAD_LETTERS = hashlib.sha256(b"").hexdigest()[:24]
SAMPLE = ROOT / "include" / "sample_exports" / "webhooks" / "walkme_webhooks_2024-03-10.csv"


class CapturingSession(requests.Session):
    """Keeps each body the client posts and answers 200 as Heap does; nothing leaves the process."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def post(self, url: str, data: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.bodies.append(bytes(data))
        response = requests.Response()
        response.status_code, response._content, response.url = 200, b"{}", url
        return response


def replay_digest(
    source: Any, spec: MappingSpec, window: Window, tmp_path: Path, *, ledger: Any = None, **options: Any
) -> dict:
    """Replay into a capturing client: the digest of the bodies, of the dead letters, and the counts."""
    session = CapturingSession()
    client = HeapClient("http://127.0.0.1:9", "golden-app", session=session)
    letters = DeadLetters(str(tmp_path / "dead"), "golden", window.label)
    settings = {"max_invalid_ratio": 0.9, "app_limit": None, "identity_limit": None, **options}
    summary = replay(
        "golden",
        source,
        spec,
        window,
        client,
        ReplayOptions(**settings),
        ledger=ledger,
        dead_letters=letters,
        work_dir=tmp_path / "work",
    )
    records = []
    for line in (tmp_path / "dead" / "golden" / f"{window.label}.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        record["origin"] = Path(record["origin"]).name if record["origin"] else ""
        records.append(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
    return {
        "bodies": hashlib.sha256(b"\n".join(session.bodies)).hexdigest()[:24],
        "requests": len(session.bodies),
        "dead_letters": hashlib.sha256(b"\n".join(sorted(records))).hexdigest()[:24],
        "counts": [
            summary.read,
            summary.sent,
            summary.already_sent,
            summary.batches,
            sorted((+summary.invalid).items()),
            sorted((+summary.skipped).items()),
            sorted((+summary.rejected).items()),
            summary.truncated_values,
        ],
    }


def test_the_sample_day_sends_the_same_bytes(tmp_path: Path) -> None:
    got = replay_digest(CsvSource(str(SAMPLE), DAY, chunk_rows=64), MappingSpec(), DAY, tmp_path)
    assert got == {
        "bodies": "a70783ab2617470e91ded8f1",
        "requests": 1,
        "dead_letters": "18be57db0470cf5c44135774",
        "counts": [
            497,
            481,
            0,
            1,
            [("identity_too_long", 1), ("malformed_row", 1), ("missing_identity", 4), ("unparsable_time", 1)],
            [("duplicate_in_source", 1), ("non_production", 3), ("outside_window", 5)],
            [],
            1,
        ],
    }


def test_the_hostile_day_sends_the_same_bytes_from_csv_and_json_lines(tmp_path: Path) -> None:
    day = normal_day()
    path = write_csv(tmp_path / "hostile.csv", day)
    got = replay_digest(
        CsvSource(str(path), DAY, chunk_rows=50, max_record_bytes=16_384), HOSTILE_SPEC, DAY, tmp_path / "c"
    )
    assert got == {
        "bodies": "fbd6c416af34f9e3fc75c8f4",
        "requests": 1,
        "dead_letters": "11228efc5abed92c13f8c641",
        "counts": [307, 295, 0, 1, HOSTILE_INVALID, [], [], 0],
    }
    path = write_jsonl(tmp_path / "hostile.jsonl", day)
    got = replay_digest(
        JsonLinesSource(str(path), DAY, chunk_rows=50, max_record_bytes=16_384),
        HOSTILE_SPEC,
        DAY,
        tmp_path / "j",
    )
    assert got == {
        "bodies": "1cc4d4bf9e1d487b169e6c6f",
        "requests": 1,
        "dead_letters": "06eafdab2c4c589b3d87e5bc",
        "counts": [307, 295, 0, 1, HOSTILE_INVALID, [], [], 0],
    }


@pytest.mark.parametrize(
    ("max_bytes", "bodies", "requests"),
    [(None, "923e1df12b664a684fdd6a5c", 20), (8_192, "7bf55d53d42853641949ec7c", 1340)],
)
def test_the_benchmark_export_sends_the_same_bytes(
    tmp_path: Path, max_bytes: int | None, bodies: str, requests: int
) -> None:
    """20,000 generated rows (skewed identities, non-ASCII, long titles), with and without a byte cap
    small enough to split batches one event at a time."""
    path = bench.generate(tmp_path / "bench.csv", 20_000, identities=500)
    options = {} if max_bytes is None else {"max_bytes": max_bytes}
    got = replay_digest(
        CsvSource(str(path), bench.window()), bench.spec(), bench.window(), tmp_path, **options
    )
    assert got == {
        "bodies": bodies,
        "requests": requests,
        "dead_letters": NO_DEAD_LETTERS,
        "counts": [20_000, 20_000, 0, requests, [], [], [], 0],
    }


def write_with_repeats(path: Path) -> Path:
    """The benchmark's export (5,000 rows) with 500 redeliveries: the same key fields, another
    title, so the body of the first occurrence differs from the repeat's. 250 follow their original
    at once (one chunk holds both), 250 come at the end (a later chunk)."""
    bench.generate(path, 5_000, identities=300, seed=3)
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    title = header.split(",").index("ctx.title")

    def redelivered(row: str) -> str:
        fields = row.split(",")
        fields[title] = "redelivered"
        return ",".join(fields)

    lines = [header]
    for number, row in enumerate(rows):
        lines += [row, redelivered(row)] if number < 250 else [row]
    lines += [redelivered(row) for row in rows[250:500]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("event_id", "bodies"), [(False, "a29d7b008c62a4654130ef98"), (True, "8503e3eb8d1de26ba4effbfd")]
)
def test_repeats_the_ledger_and_keys_spilled_to_disk_send_the_same_bytes(
    tmp_path: Path, event_id: bool, bodies: str
) -> None:
    """Repeats keep their first occurrence; a second run sends nothing (the ledger); the in-run
    check spills its keys to disk (``dedupe_memory_keys``); with an event-id column, keys from it."""
    from walkme_heap.ledger import Ledger

    path = write_with_repeats(tmp_path / "repeats.csv")
    spec = MappingSpec(**bench.SPEC_KW, columns={"event_id": ["sId"]} if event_id else {})
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    try:
        first, second = (
            replay_digest(
                CsvSource(str(path), bench.window(), chunk_rows=700),
                spec,
                bench.window(),
                tmp_path / run,
                ledger=ledger,
                dedupe_memory_keys=1_000,
            )
            for run in ("first", "second")
        )
    finally:
        ledger.close()
    repeats = [("duplicate_in_source", 500)]
    assert first == {
        "bodies": bodies,
        "requests": 5,
        "dead_letters": NO_DEAD_LETTERS,
        "counts": [5_500, 5_000, 0, 5, [], repeats, [], 0],
    }
    assert second == {
        "bodies": hashlib.sha256(b"").hexdigest()[:24],
        "requests": 0,
        "dead_letters": NO_DEAD_LETTERS,
        "counts": [5_500, 0, 5_000, 0, [], repeats, [], 0],
    }
