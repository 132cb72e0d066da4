"""Sharded replays: a stable split by identity, and shards that add up to the whole day."""

from __future__ import annotations

import csv
import zlib
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import DAY, SPEC, expected_keys, received, run_records, write_day
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sharding import Shard
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.summary import ReplaySummary


def test_shard_of_an_identity_is_crc32_mod_count() -> None:
    """Pinned: a different split would move identities between shards of a running backfill."""
    identities = ["heavy-user", "user-01", "477724a08ce1072b000001c8", "經費", ""]
    assert [zlib.crc32(i.encode()) for i in identities] == [488379332, 2153983181, 562595096, 2805997121, 0]
    for count in (4, 7):
        for index in range(count):
            mask = Shard(index, count).mask(identities)
            assert [i for i, m in zip(identities, mask, strict=True) if m] == [
                i for i in identities if zlib.crc32(i.encode()) % count == index
            ]


def test_every_identity_is_in_exactly_one_shard() -> None:
    identities = [f"user-{n}" for n in range(5000)]
    owners = sum(Shard(i, 7).mask(identities).astype(int) for i in range(7))
    assert set(owners.tolist()) == {1}


@pytest.mark.parametrize(("index", "count"), [(0, 0), (4, 4), (-1, 2), (0, 65)])
def test_bad_shards_are_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard(index, count)


def _replay(day_file: Path, client: HeapClient | None, options: ReplayOptions, **kw: object) -> ReplaySummary:
    return replay("p", CsvSource(str(day_file), DAY), SPEC, DAY, client, options, **kw)  # type: ignore[arg-type]


def _malformed_day(path: Path) -> Path:
    write_day(path, 900)
    with path.open("a", encoding="utf-8") as handle:  # a record with too many fields
        handle.write('user-03,1710030000000,play,wt,1,s-x,"t",extra\n')
    return path


def _rows_per_shard(path: Path, count: int) -> list[int]:
    """Rows each shard reads, counted from the file itself: a record with too many fields (the
    parser cannot split it) is shard 1's, every other row its identity's CRC-32 shard's."""
    rows = [0] * count
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for record in reader:
            shard = 0 if len(record) > len(header) else zlib.crc32(record[0].strip().encode()) % count
            rows[shard] += 1
    return rows


def test_shards_add_up_to_the_unsharded_day(tmp_path: Path) -> None:
    """Three shards send every valid event once; their summaries add up to one unsharded run's."""
    day_file = _malformed_day(tmp_path / "day.csv")
    whole = _replay(day_file, None, ReplayOptions(dry_run=True))
    emulator = HeapEmulator(settings=EmulatorSettings(app_limit=None, identity_limit=None)).start()
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    try:
        parts = []
        for index in range(3):
            letters = DeadLetters(str(tmp_path / "dl"), "p", f"{DAY.label}.{Shard(index, 3).label}")
            options = ReplayOptions(shard=Shard(index, 3), run_id="run-1")
            client = HeapClient(emulator.url, "app")
            parts.append(_replay(day_file, client, options, ledger=ledger, dead_letters=letters))
            client.close()
        keys = Counter(e["idempotency_key"] for e in received(emulator))
    finally:
        emulator.stop()
    assert set(keys) == expected_keys(day_file) and set(keys.values()) == {1}
    assert all(p.read > 0 for p in parts)  # each shard had identities of its own
    assert [p.read for p in parts] == _rows_per_shard(day_file, 3)
    total = ReplaySummary.combine([ReplaySummary.from_dict(p.as_dict()) for p in parts])
    assert total.unaccounted == 0
    assert (total.read, total.sent, total.invalid, total.skipped) == (
        whole.read,
        whole.sent,
        whole.invalid,
        whole.skipped,
    )
    assert total.invalid["malformed_row"] == 1 and parts[0].invalid["malformed_row"] == 1
    assert sorted(r["shard"] for r in run_records(ledger, "p")) == ["1/3", "2/3", "3/3"]
    assert len(list((tmp_path / "dl" / "p").glob("*.shard-*-of-3.jsonl"))) == 3


def test_a_day_resharded_sends_nothing_again(tmp_path: Path) -> None:
    """The ledger is per day, not per shard: 2 shards after an unsharded run find all sent."""
    day_file = write_day(tmp_path / "day.csv", 400)
    emulator = HeapEmulator(settings=EmulatorSettings(app_limit=None, identity_limit=None)).start()
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    try:
        client = HeapClient(emulator.url, "app")
        first = _replay(day_file, client, ReplayOptions(), ledger=ledger)
        again = [_replay(day_file, client, ReplayOptions(shard=Shard(i, 2)), ledger=ledger) for i in range(2)]
        client.close()
    finally:
        emulator.stop()
    assert sum(p.already_sent for p in again) == first.sent and sum(p.sent for p in again) == 0
