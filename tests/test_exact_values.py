"""Values reach Heap exactly as the export holds them, and keys are a function of the record alone:
large integers are never rounded through float64, whatever the source (CSV, JSON Lines, SQL) and
however the rows are chunked; identities that are not text are refused, never merged."""

from __future__ import annotations

import csv
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import DAY, PG_DSN, postgres_connection, received
from walkme_heap.delivery.client import HeapClient
from walkme_heap.emulator import HeapEmulator
from walkme_heap.mapping.columns import bind_columns
from walkme_heap.mapping.mapper import Mapper
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sources.base import Source, flatten
from walkme_heap.sources.jsonl_files import JsonLinesSource
from walkme_heap.sources.sql import SqlSource, table_query

BIG = 2**53 + 1  # the first integer float64 cannot hold
CONSTANT = EventNameSpec(constant="E")
SPEC = MappingSpec(
    columns={"identity": ["uid"], "timestamp": ["ts"], "item_id": ["oId"], "session_id": ["sId"]},
    event_name=EventNameSpec(constant="Played"),
)


def mapped(source: Source, spec: MappingSpec = SPEC) -> tuple[list[dict[str, Any]], list[str]]:
    """Every event and every refusal reason of a source's window, as a replay maps them."""
    events: list[dict[str, Any]] = []
    reasons: list[str] = []
    for origin in source.origins():
        mapper = Mapper(spec, bind_columns(spec, source.headers(origin), origin))
        for chunk in source.chunks(origin):
            reasons.extend("malformed_row" for _ in chunk.malformed)
            if chunk.frame.empty:
                continue
            result = mapper.map_chunk(chunk.frame, DAY.start_ms, DAY.end_ms, escaped=chunk.escaped)
            events.extend(result.events)
            reasons.extend(reason for _, reason, _ in result.rejected)
    return events, reasons


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# -- large integers ---------------------------------------------------------------------------------
def test_json_identities_beyond_float64_stay_exact_when_a_row_lacks_one(tmp_path: Path) -> None:
    """A missing identity in the chunk made pandas read the column as float64: BIG and BIG + 1
    became one person (irreversible in Heap) and the second event a "duplicate"."""
    ts = DAY.start_ms + 1000
    path = write_jsonl(
        tmp_path / "day.jsonl",
        [
            {"uid": BIG, "ts": ts, "oId": BIG + 2, "sId": "s"},
            {"uid": BIG + 1, "ts": ts, "oId": 7, "sId": "s"},
            {"ts": ts, "oId": 8, "sId": "s"},
        ],
    )
    events, reasons = mapped(JsonLinesSource(str(path), DAY))
    assert [e["identity"] for e in events] == [str(BIG), str(BIG + 1)]
    assert len({e["idempotency_key"] for e in events}) == 2
    assert reasons == ["missing_identity"]


def test_integers_beyond_what_json_numbers_carry_are_sent_as_exact_text(tmp_path: Path) -> None:
    """Heap reads numbers as doubles: an integer beyond 2^53 goes as its exact digits. Integers of
    2^64 and more crashed the batch encoder."""
    ts = DAY.start_ms + 1000
    huge = 2**64 + 1
    path = write_jsonl(
        tmp_path / "day.jsonl",
        [
            {"uid": "a", "ts": ts, "n": huge, "neg": -(2**63) - 1, "big": BIG, "small": 42, "f": 1.5},
            {"uid": "b", "ts": ts, "n": None, "neg": 5, "small": 43},
        ],
    )
    events, _ = mapped(JsonLinesSource(str(path), DAY))
    assert events[0]["properties"] == {
        "n": str(huge),
        "neg": str(-(2**63) - 1),
        "big": str(BIG),
        "small": 42,
        "f": 1.5,
    }
    assert events[1]["properties"] == {"neg": 5, "small": 43}
    orjson.dumps(events)  # what the batch encoder does: no "Integer exceeds 64-bit range"


def test_a_json_integer_of_2_64_and_more_is_read_exactly(tmp_path: Path) -> None:
    """orjson reads such an integer as a float: the digits are read again exactly."""
    path = tmp_path / "day.jsonl"
    path.write_text(
        f'{{"uid": 123456789012345678901234567890, "ts": {DAY.start_ms}, "p": 0.10000000000000000000001}}\n'
    )
    events, _ = mapped(JsonLinesSource(str(path), DAY))
    assert events[0]["identity"] == "123456789012345678901234567890"
    assert events[0]["properties"]["p"] == "0.10000000000000000000001"


def test_sql_bigint_identities_with_a_null_in_the_chunk_stay_exact(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ev (uid INTEGER, ts INTEGER, oId INTEGER, sId TEXT)")
        ts = DAY.start_ms + 5
        conn.executemany(
            "INSERT INTO ev VALUES (?, ?, ?, ?)",
            [(BIG, ts, BIG, "s"), (BIG + 1, ts + 1, None, "s"), (None, ts + 2, 3, "s")],
        )
    source = SqlSource(
        lambda: sqlite3.connect(db),
        "?",
        DAY,
        query=table_query("ev", "ts", ["ts"]),
        time_type="epoch_ms",
    )
    events, reasons = mapped(source)
    assert [e["identity"] for e in events] == [str(BIG), str(BIG + 1)]
    assert events[0]["properties"] == {"oId": str(BIG), "sId": "s"}
    assert reasons == ["missing_identity"]


def test_postgres_bigint_numeric_and_jsonb_values_stay_exact() -> None:
    with postgres_connection() as db, db.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS wh_exact")
        cur.execute(
            "CREATE TABLE wh_exact (uid BIGINT, who NUMERIC, ts BIGINT, amount NUMERIC(40,20), "
            "whole NUMERIC(40,0), payload JSONB)"
        )
        cur.execute(
            "INSERT INTO wh_exact VALUES (%s,%s,%s,%s,%s,%s), (%s,%s,%s,%s,%s,%s), (%s,%s,%s,%s,%s,%s)",
            [
                *(BIG, Decimal("123456789012345678901234567890"), DAY.start_ms + 1),
                *(Decimal("0.10000000000000000001"), Decimal(2**64 + 1)),
                '{"deep": {"n": 123456789012345678901234567890, "f": 2.5}}',
                *(BIG + 1, None, DAY.start_ms + 2, Decimal("12.50"), None, '{"deep": {"n": 1}}'),
                *(None, Decimal(7), DAY.start_ms + 3, None, Decimal(5), '{"deep": {}}'),
            ],
        )
    import psycopg

    source = SqlSource(
        lambda: psycopg.connect(PG_DSN),
        "%s",
        DAY,
        query=table_query("wh_exact", "ts", ["ts"]),
        time_type="epoch_ms",
        payload_column="payload",
    )
    spec = MappingSpec(
        columns={"identity": ["uid"], "timestamp": ["ts"]}, event_name=EventNameSpec(constant="E")
    )
    events, reasons = mapped(source, spec)
    assert [e["identity"] for e in events] == [str(BIG), str(BIG + 1)]
    assert events[0]["properties"] == {
        "who": "123456789012345678901234567890",
        "amount": "0.10000000000000000001",
        "whole": str(2**64 + 1),
        "deep.n": "123456789012345678901234567890",
        "deep.f": 2.5,
    }
    assert events[1]["properties"] == {"amount": 12.5, "deep.n": 1}
    assert reasons == ["missing_identity"]
    orjson.dumps(events)


def test_replayed_into_heap_two_people_stay_two(tmp_path: Path, emulator: HeapEmulator) -> None:
    ts = DAY.start_ms + 1000
    path = write_jsonl(
        tmp_path / "day.jsonl",
        [
            {"uid": BIG, "ts": ts, "sId": "s", "n": 2**64},
            {"uid": BIG + 1, "ts": ts, "sId": "s"},
            {"ts": ts},
        ],
    )
    client = HeapClient(emulator.url, "app", connect_timeout=2, read_timeout=5)
    summary = replay(
        "exact", JsonLinesSource(str(path), DAY), SPEC, DAY, client, ReplayOptions(max_invalid_ratio=1)
    )
    client.close()
    assert summary.sent == 2
    got = sorted(received(emulator), key=lambda e: e["identity"])
    assert [e["identity"] for e in got] == [str(BIG), str(BIG + 1)]
    assert got[0]["properties"]["n"] == str(2**64)


# -- keys are a function of the record alone ----------------------------------------------------------
identities = st.one_of(
    st.integers(min_value=2**53 - 3, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=10**6),
    st.text(alphabet="abcxyzé-_0123456789@.", min_size=1, max_size=12).filter(
        lambda s: s.strip() == s and not s.isdigit() and s.lower() not in ("nan", "null", "none", "nil")
    ),
    st.none(),
)
records = st.lists(
    st.fixed_dictionaries(
        {
            "uid": identities,
            "ts": st.integers(min_value=DAY.start_ms - 10, max_value=DAY.end_ms + 10),
            "oId": st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)),
            "sId": st.one_of(st.none(), st.text(alphabet="sS12", min_size=1, max_size=4)),
        }
    ),
    min_size=1,
    max_size=25,
)


def _write_all(folder: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The same records as a CSV export, a JSON Lines export (numbers as JSON numbers), a SQLite
    table (INTEGER columns)."""
    with (folder / "day.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "ts", "oId", "sId"])
        for r in rows:
            writer.writerow(["" if r[k] is None else r[k] for k in ("uid", "ts", "oId", "sId")])
    (folder / "day.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    db = folder / "day.db"
    db.unlink(missing_ok=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ev (n INTEGER, uid, ts INTEGER, oId INTEGER, sId TEXT)")
        conn.executemany(
            "INSERT INTO ev VALUES (?, ?, ?, ?, ?)",
            [(n, r["uid"], r["ts"], r["oId"], r["sId"]) for n, r in enumerate(rows)],
        )
    return {"csv": folder / "day.csv", "jsonl": folder / "day.jsonl", "db": db}


def _canonical(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """An event with its properties as text: a CSV export holds every value as text."""
    return sorted(
        (
            e["idempotency_key"],
            e["identity"],
            e["event"],
            e["timestamp"],
            tuple(sorted((k, str(v)) for k, v in e.get("properties", {}).items())),
        )
        for e in events
    )


def _as_json(events: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in events)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=records, chunk_rows=st.integers(min_value=1, max_value=30))
def test_keys_and_events_are_the_same_from_every_source_and_chunking(
    tmp_path: Path, rows: list[dict[str, Any]], chunk_rows: int
) -> None:
    from walkme_heap.sources.csv_files import CsvSource

    files = _write_all(tmp_path, rows)
    whole_csv, _ = mapped(CsvSource(str(files["csv"]), DAY, chunk_rows=10_000))
    by_source = {
        "csv": mapped(CsvSource(str(files["csv"]), DAY, chunk_rows=chunk_rows)),
        "jsonl": mapped(JsonLinesSource(str(files["jsonl"]), DAY, chunk_rows=chunk_rows)),
        "sql": mapped(
            SqlSource(
                lambda: sqlite3.connect(files["db"]),
                "?",
                DAY,
                query="SELECT uid, ts, oId, sId FROM ev "
                "WHERE ts >= :window_start AND ts < :window_end ORDER BY n",
                time_type="epoch_ms",
                chunk_rows=chunk_rows,
            )
        ),
    }
    expected = _canonical(whole_csv)
    for name, (events, _) in by_source.items():
        assert _canonical(events) == expected, name
    # the same source chunked another way gives the same JSON (types included: 0 is not 0.0), not
    # only equal text; the order of properties follows the records' keys and may differ
    jsonl_whole, _ = mapped(JsonLinesSource(str(files["jsonl"]), DAY, chunk_rows=10_000))
    assert _as_json(by_source["jsonl"][0]) == _as_json(jsonl_whole)
    assert sorted(by_source["csv"][1]) == sorted(by_source["jsonl"][1])
    in_window = [r for r in by_source["csv"][1] if r != "outside_window"]  # the query selects the window
    assert sorted(by_source["sql"][1]) == sorted(in_window)


# -- hostile JSON ----------------------------------------------------------------------------------
def test_json_nested_to_orjsons_limit_flattens_without_recursion(tmp_path: Path) -> None:
    deep: dict[str, Any] = {"leaf": "x"}
    for _ in range(1020):
        deep = {"k": deep}
    assert len(list(flatten(deep))) == 1
    path = tmp_path / "day.jsonl"
    nested = '{"k": ' * 1020 + '{"leaf": "x"}' + "}" * 1020  # serialisers stop far earlier
    path.write_text(f'{{"uid": "u", "ts": {DAY.start_ms}, "d": {nested}}}\n')
    events, reasons = mapped(JsonLinesSource(str(path), DAY))
    assert len(events) == 1 and reasons == []
    (key,) = events[0]["properties"]
    assert key.startswith("d.k.k.") and len(key) <= 1023


# -- identities that are not text ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "identity",
    ["ab\x00c", "a\tb", "tab\x1fsep", "del\x7f", "c\x851", "bad\udcffbyte"],
)
def test_an_identity_that_is_not_text_is_refused_with_its_own_reason(identity: str) -> None:
    spec = MappingSpec(
        columns={"identity": ["uid"], "timestamp": ["ts"]}, event_name=EventNameSpec(constant="E")
    )
    mapper = Mapper(spec, bind_columns(spec, ["uid", "ts"], "x"))
    frame = pd.DataFrame({"uid": [identity, "abc"], "ts": [str(DAY.start_ms)] * 2}, dtype="string")
    result = mapper.map_chunk(frame, DAY.start_ms, DAY.end_ms)
    assert [e["identity"] for e in result.events] == ["abc"]
    assert result.invalid == {"identity_not_text": 1}


def test_bytes_that_are_not_utf8_keep_the_keys_a_replacing_decoder_gave(tmp_path: Path) -> None:
    """Outside the identity, undecodable bytes become U+FFFD as before they were kept: the same
    events and keys as the same export written with U+FFFD (what was sent earlier stays sent)."""
    from walkme_heap.sources.csv_files import CsvSource

    ts = DAY.start_ms + 1000
    raw = f"uid,ts,sId,oId,ti\xefle\nu1,{ts},s\xff1,o\xfe\xfd,caf\xe9\nb\xffd,{ts},s,o,t\n".encode("latin-1")
    (tmp_path / "raw.csv").write_bytes(raw)
    (tmp_path / "replaced.csv").write_text(raw.decode("utf-8", "replace"), encoding="utf-8")
    events, reasons = mapped(CsvSource(str(tmp_path / "raw.csv"), DAY))
    replaced, _ = mapped(CsvSource(str(tmp_path / "replaced.csv"), DAY))
    assert events == replaced[:1]
    assert events[0]["properties"] == {"oId": "o\ufffd\ufffd", "sId": "s\ufffd1", "ti\ufffdle": "caf\ufffd"}
    assert reasons == ["identity_not_text"]  # never merged with an identity spelled with U+FFFD
    orjson.dumps(events)


@pytest.mark.parametrize("how", ["shard", "row_limit"])
def test_bytes_that_are_not_utf8_survive_a_shard_or_a_trial_run(
    tmp_path: Path, emulator: HeapEmulator, how: str
) -> None:
    """Both rebuild the chunk: they must keep what it says about its text."""
    from walkme_heap.sharding import Shard
    from walkme_heap.sources.csv_files import CsvSource

    ts = DAY.start_ms + 1000
    rows = "".join(f"u{n},{ts + n},s{n},caf\xe9\n" for n in range(20))
    (tmp_path / "day.csv").write_bytes(f"uid,ts,sId,title\n{rows}".encode("latin-1"))
    options = ReplayOptions(shard=Shard(0, 1)) if how == "shard" else ReplayOptions(row_limit=5)
    client = HeapClient(emulator.url, "app", connect_timeout=2, read_timeout=5)
    summary = replay("bytes", CsvSource(str(tmp_path / "day.csv"), DAY), SPEC, DAY, client, options)
    client.close()
    assert summary.sent == (20 if how == "shard" else 5)
    assert {e["properties"]["title"] for e in received(emulator)} == {"caf\ufffd"}


def test_json_lines_that_are_not_utf8_keep_their_bytes_apart_like_csv(tmp_path: Path) -> None:
    """Before: the line was decoded with U+FFFD (identities merged); a malformed line would lose
    the other values: now the identity is refused, other values get U+FFFD, keys as before."""
    ts = DAY.start_ms + 1000
    lines = [
        f'{{"uid": "b\xffd", "ts": {ts}}}',
        f'{{"uid": "u1", "ts": {ts}, "sId": "s\xfe", "t": "caf\xe9"}}',
    ]
    raw = "".join(line + "\n" for line in lines).encode("latin-1")
    (tmp_path / "raw.jsonl").write_bytes(raw)
    (tmp_path / "replaced.jsonl").write_text(raw.decode("utf-8", "replace"), encoding="utf-8")
    events, reasons = mapped(JsonLinesSource(str(tmp_path / "raw.jsonl"), DAY))
    replaced, _ = mapped(JsonLinesSource(str(tmp_path / "replaced.jsonl"), DAY))
    assert reasons == ["identity_not_text"]
    assert events == replaced[1:]
    assert events[0]["properties"] == {"sId": "s\ufffd", "t": "caf\ufffd"}


def test_json_lines_with_carriage_returns_alone_are_lines(tmp_path: Path) -> None:
    ts = DAY.start_ms
    (tmp_path / "mac.jsonl").write_bytes(
        b"".join(f'{{"uid": "u{n}", "ts": {ts}}}\r'.encode() for n in range(3))
    )
    events, reasons = mapped(JsonLinesSource(str(tmp_path / "mac.jsonl"), DAY))
    assert [e["identity"] for e in events] == ["u0", "u1", "u2"] and reasons == []


@pytest.mark.parametrize(
    ("number", "sent"),
    [
        ("1.0000000000000001", "1.0000000000000001"),  # digits split by the point
        ("9007199254740993.5", "9007199254740993.5"),
        ("1.5", 1.5),
        ("0.1", 0.1),
        ("1e-9999999999999999999", 0.0),  # no decimal holds that exponent: read as orjson reads it
    ],
)
def test_json_decimals_are_exact_or_floats_that_are_exactly_them(
    tmp_path: Path, number: str, sent: Any
) -> None:
    path = tmp_path / "day.jsonl"
    # a 19-digit id in a string beside a float must not change how the float is read (its key)
    path.write_text(f'{{"uid": "1234567890123456789", "ts": {DAY.start_ms}, "n": {number}, "f": 2.5}}\n')
    events, reasons = mapped(JsonLinesSource(str(path), DAY))
    assert reasons == [] and events[0]["properties"]["n"] == sent
    assert type(events[0]["properties"]["f"]) is float


def test_deeply_nested_arrays_are_joined_without_recursion(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text(f'{{"uid": "u", "ts": {DAY.start_ms}, "a": ' + "[" * 1000 + '"x", 2' + "]" * 1000 + "}\n")
    events, _ = mapped(JsonLinesSource(str(path), DAY))
    assert events[0]["properties"]["a"] == "x||2"


def test_a_decimal_of_thousands_of_digits_is_sent_as_its_digits() -> None:
    spec = MappingSpec(columns={"identity": ["uid"], "timestamp": ["ts"]}, event_name=CONSTANT)
    mapper = Mapper(spec, bind_columns(spec, ["uid", "ts", "n"], "x"))
    huge = Decimal("7E+5000")
    frame = pd.DataFrame({"uid": ["u"], "ts": [DAY.start_ms], "n": [huge]}, dtype=object)
    (event,) = mapper.map_chunk(frame, DAY.start_ms, DAY.end_ms).events
    assert event["properties"]["n"] == "7" + "0" * 5000
