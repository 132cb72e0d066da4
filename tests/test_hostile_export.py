"""Acceptance: a normal day with every hostile record mixed in, as a CSV export, a gzipped one, JSON
Lines and a PostgreSQL table (BIGINT, NUMERIC, JSONB), replays with every valid event exactly once
under its exact identity, every other row counted and dead-lettered with its reason, the counts
reconciling to the row, and no record failing the run."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import DAY, PG_DSN, postgres_connection, received
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.emulator import HeapEmulator
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sources.base import Source
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.sources.jsonl_files import JsonLinesSource
from walkme_heap.sources.sql import SqlSource, table_query

BASE = 2**53  # every identity is beyond what a float64 holds
MAX_RECORD = 16_384  # the test's max_record_bytes (the deep record takes 7 KB)
NORMAL = 300
SPEC = MappingSpec(
    columns={"identity": ["uid"], "timestamp": ["ts"], "event_type": ["type"], "session_id": ["sId"]},
    event_name=EventNameSpec(event_type="complete"),
)
COLUMNS = ["uid", "ts", "type", "sId", "oId", "amount", "ctx.title"]


@dataclass
class Day:
    """The records every form of the export holds, and what a replay must make of them."""

    records: list[dict[str, Any]]  # uid int or None, ts, type, sId, oId int|None, amount Decimal|None, title
    identities: set[str]  # the exact identities Heap must hold, one event each

    def missing_identity(self) -> int:
        return sum(r["uid"] is None for r in self.records)


def normal_day() -> Day:
    records = []
    for n in range(NORMAL):
        records.append(
            {
                "uid": None if n % 50 == 7 else BASE + 1 + 2 * n,  # odd: float64 would round it
                "ts": DAY.start_ms + n * 250_000,
                "type": "play",
                "sId": f"s-{n}",
                "oId": None if n % 3 == 0 else BASE + 3 + 2 * n,
                "amount": [None, Decimal("12.50"), Decimal("0.10000000000000000001"), Decimal(2**64 + 1)][
                    n % 4
                ],
                "ctx.title": f"Page {n} ü",
            }
        )
    return Day(records, {str(r["uid"]) for r in records if r["uid"] is not None})


# Records only a file can hold, with the reason each must get: (CSV line, JSON line, reason).
def hostile_file_records() -> list[tuple[bytes, bytes, str]]:
    ts = DAY.start_ms + 3_600_000
    big = '"x' + "y" * MAX_RECORD + '"'

    def csv_row(*values: str) -> bytes:
        return (",".join(values) + "\r\n").encode()

    def json_row(**values: Any) -> bytes:
        return orjson.dumps(values) + b"\n"

    return [
        (
            csv_row("nul\x00id", str(ts), "play", "h1", "", "", "t"),
            json_row(uid="nul\x00id", ts=ts, type="play", sId="h1"),
            "identity_not_text",
        ),
        (
            csv_row("tab\tid", str(ts), "play", "h2", "", "", "t"),
            json_row(uid="tab\tid", ts=ts, type="play", sId="h2"),
            "identity_not_text",
        ),
        (
            csv_row("bad", str(ts), "play", "h3", "", "", "t").replace(b"bad", b"b\xffd"),
            json_row(uid="bad", ts=ts, type="play", sId="h3").replace(b"bad", b"b\xffd"),
            "identity_not_text",  # the bytes kept apart: never merged with "b\ufffdd"
        ),
        (
            csv_row("oversized", str(ts), "play", "h4", "", "", big),
            json_row(uid="oversized", ts=ts, ctx={"title": big}),
            "malformed_row",
        ),
        (
            csv_row("wide", str(ts), "play", "h5", "", "", "t", "extra", "fields"),
            b"[1, 2, 3]\n",
            "malformed_row",
        ),
    ]


def write_csv(path: Path, day: Day, *, gz: bool = False) -> Path:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for r in day.records:
        writer.writerow(["" if r[c] is None else r[c] for c in COLUMNS])
    body = text.getvalue().encode()
    hostile = hostile_file_records()
    body += b"".join(row for row, _, _ in hostile)
    # a property with bytes that are not UTF-8 (sent with U+FFFD), then a truncated last record
    body += f"{BASE + 10**6},{DAY.start_ms + 7},play,bytes,,,".encode() + b"caf\xe9\r\n"
    body += f"{BASE + 10**6 + 2},{DAY.start_ms + 9},pl".encode()  # the file is still being written
    if gz:
        path.write_bytes(gzip.compress(body))
    else:
        path.write_bytes(body)
    return path


def write_jsonl(path: Path, day: Day) -> Path:
    lines = []
    for r in day.records:
        record = {k: v for k, v in r.items() if k not in ("ctx.title", "amount")}
        record["ctx"] = {"title": r["ctx.title"]}
        amount = "null" if r["amount"] is None else str(r["amount"])  # a JSON number, digits as held
        lines.append(json.dumps(record)[:-1] + f', "amount": {amount}}}\n')
    body = "".join(lines).encode()
    body += b"".join(line for _, line, _ in hostile_file_records())
    deep = '{"k": ' * 1000 + '"leaf"' + "}" * 1000
    head = f'{{"uid": {BASE + 10**6}, "ts": {DAY.start_ms + 7}, "type": "play", "sId": "deep"'
    body += f'{head}, "d": {deep}}}\n'.encode()
    body += f'{{"uid": {BASE + 10**6 + 2}, "ts": {DAY.start_ms + 9}, "ty'.encode()  # cut short
    path.write_bytes(body)
    return path


def write_table(day: Day) -> None:
    with postgres_connection() as db, db.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS wh_hostile")
        cur.execute(
            'CREATE TABLE wh_hostile (n INT, uid BIGINT, ts BIGINT, type TEXT, "sId" TEXT, "oId" BIGINT, '
            "amount NUMERIC, payload JSONB)"
        )
        cur.executemany(
            "INSERT INTO wh_hostile VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    n,
                    r["uid"],
                    r["ts"],
                    r["type"],
                    r["sId"],
                    r["oId"],
                    r["amount"],
                    json.dumps({"ctx": {"title": r["ctx.title"]}}),
                )
                for n, r in enumerate(day.records)
            ]
            + [
                # the deep record and one integer beyond 64 bits inside the JSONB payload
                (
                    NORMAL,
                    BASE + 10**6,
                    DAY.start_ms + 7,
                    "play",
                    "deep",
                    None,
                    None,
                    '{"d": ' * 100 + "2" * 30 + "}" * 100,
                ),
            ],
        )


def _source(kind: str, tmp_path: Path, day: Day) -> Source:
    if kind == "csv":
        return CsvSource(
            str(write_csv(tmp_path / "day.csv", day)), DAY, chunk_rows=37, max_record_bytes=MAX_RECORD
        )
    if kind == "csv.gz":
        return CsvSource(
            str(write_csv(tmp_path / "day.csv.gz", day, gz=True)),
            DAY,
            chunk_rows=37,
            max_record_bytes=MAX_RECORD,
        )
    if kind == "jsonl":
        return JsonLinesSource(
            str(write_jsonl(tmp_path / "day.jsonl", day)), DAY, chunk_rows=37, max_record_bytes=MAX_RECORD
        )
    import psycopg

    write_table(day)
    return SqlSource(
        lambda: psycopg.connect(PG_DSN),
        "%s",
        DAY,
        query=table_query("wh_hostile", "ts", ["n"]),
        time_type="epoch_ms",
        payload_column="payload",
        chunk_rows=37,
        label="pg:wh_hostile",
    )


def expected_reasons(kind: str, day: Day) -> Counter[str]:
    reasons: Counter[str] = Counter({"missing_identity": day.missing_identity()})
    if kind == "sql":
        return reasons
    for _, _, reason in hostile_file_records():
        reasons[reason] += 1
    reasons["malformed_row"] += 1  # the truncated last record
    return reasons


@pytest.mark.parametrize("kind", ["csv", "csv.gz", "jsonl", "sql"])
def test_a_hostile_day_replays_every_valid_event_exactly_once(
    kind: str, tmp_path: Path, emulator: HeapEmulator
) -> None:
    day = normal_day()
    source = _source(kind, tmp_path, day)
    letters = DeadLetters(str(tmp_path / "dead"), "hostile", DAY.label, work_dir=tmp_path / "work")
    client = HeapClient(emulator.url, "app", connect_timeout=2, read_timeout=5)
    try:
        summary = replay("hostile", source, SPEC, DAY, client, ReplayOptions(), dead_letters=letters)
    finally:
        client.close()

    extra = {"csv": 1, "csv.gz": 1, "jsonl": 1, "sql": 1}[kind]  # the bytes / deep record, valid
    events = received(emulator)
    keys = [e["idempotency_key"] for e in events]
    assert len(keys) == len(set(keys)) == summary.sent == len(day.identities) + extra
    assert {e["identity"] for e in events} == day.identities | {str(BASE + 10**6)}
    assert summary.invalid == expected_reasons(kind, day)
    rows = NORMAL + (1 if kind == "sql" else len(hostile_file_records()) + 2)
    assert summary.read == rows == summary.sent + summary.total_invalid + sum(summary.skipped.values())
    dead = [orjson.loads(line) for line in Path(summary.dead_letters or "").read_bytes().splitlines()]
    assert Counter(d["reason"] for d in dead) == summary.invalid
    assert all(d["origin"] and d["row"] for d in dead)

    by_identity = {e["identity"]: e for e in events}
    first = by_identity[str(BASE + 3)]  # n = 1: oId present, amount 12.50
    assert first["properties"]["oId"] == str(BASE + 5) and first["properties"]["amount"] == (
        "12.50" if kind.startswith("csv") else 12.5
    )
    huge = by_identity[str(BASE + 7)]  # n = 3: amount 2^64 + 1
    assert huge["properties"]["amount"] == str(2**64 + 1)
    if kind in ("csv", "csv.gz"):
        assert by_identity[str(BASE + 10**6)]["properties"]["ctx.title"] == "caf\ufffd"
