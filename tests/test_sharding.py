"""Sharded replays: a stable split by identity, shards that add up to the whole day, and an app
rate budget that shards (and any other runs) share atomically through the ledger database."""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import received
from tests.test_delivery_faults import DAY, SPEC, expected_keys, write_day
from tests.warehouse import PG_DSN, postgres_connection
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.ledger import BUDGET, Ledger
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


def _replay(csv: Path, client: HeapClient | None, options: ReplayOptions, **kw: object) -> ReplaySummary:
    return replay("p", CsvSource(str(csv), DAY), SPEC, DAY, client, options, **kw)  # type: ignore[arg-type]


def _malformed_day(path: Path) -> Path:
    write_day(path, 900)
    with path.open("a", encoding="utf-8") as handle:  # a record with too many fields
        handle.write('user-03,1710030000000,play,wt,1,s-x,"t",extra\n')
    return path


def test_shards_add_up_to_the_unsharded_day(tmp_path: Path) -> None:
    """Three shards send every valid event once; their summaries add up to one unsharded run's."""
    csv = _malformed_day(tmp_path / "day.csv")
    whole = _replay(csv, None, ReplayOptions(dry_run=True))
    emulator = HeapEmulator(settings=EmulatorSettings(app_limit=None, identity_limit=None)).start()
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    try:
        parts = []
        for index in range(3):
            letters = DeadLetters(str(tmp_path / "dl"), "p", f"{DAY.label}.{Shard(index, 3).label}")
            options = ReplayOptions(shard=Shard(index, 3), run_id="run-1")
            client = HeapClient(emulator.url, "app")
            parts.append(_replay(csv, client, options, ledger=ledger, dead_letters=letters))
            client.close()
        keys = Counter(e["idempotency_key"] for e in received(emulator))
    finally:
        emulator.stop()
    assert set(keys) == expected_keys(csv) and set(keys.values()) == {1}
    assert all(p.read > 0 for p in parts)  # each shard had identities of its own
    total = ReplaySummary.combine([ReplaySummary.from_dict(p.as_dict()) for p in parts])
    assert total.unaccounted == 0
    assert (total.read, total.sent, total.invalid, total.skipped) == (
        whole.read,
        whole.sent,
        whole.invalid,
        whole.skipped,
    )
    assert total.invalid["malformed_row"] == 1 and parts[0].invalid["malformed_row"] == 1
    assert sorted(r["shard"] for r in ledger.runs("p")) == ["1/3", "2/3", "3/3"]
    assert len(list((tmp_path / "dl" / "p").glob("*.shard-*-of-3.jsonl"))) == 3


def test_a_day_resharded_sends_nothing_again(tmp_path: Path) -> None:
    """The ledger is per day, not per shard: 2 shards after an unsharded run find all sent."""
    csv = write_day(tmp_path / "day.csv", 400)
    emulator = HeapEmulator(settings=EmulatorSettings(app_limit=None, identity_limit=None)).start()
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    try:
        client = HeapClient(emulator.url, "app")
        first = _replay(csv, client, ReplayOptions(), ledger=ledger)
        again = [_replay(csv, client, ReplayOptions(shard=Shard(i, 2)), ledger=ledger) for i in range(2)]
        client.close()
    finally:
        emulator.stop()
    assert sum(p.already_sent for p in again) == first.sent and sum(p.sent for p in again) == 0


def test_summary_round_trips_and_refuses_mixed_windows() -> None:
    a = ReplaySummary("p", DAY.as_dict(), read=5, sent=3, shard="1/2")
    a.invalid["missing_identity"] = 2
    b = ReplaySummary("p", DAY.as_dict(), read=4, already_sent=1, shard="2/2")
    b.skipped["outside_window"] = 3
    assert ReplaySummary.from_dict(a.as_dict()) == a
    total = ReplaySummary.combine([a, b])
    assert (total.read, total.sent, total.already_sent, total.unaccounted) == (9, 3, 1, 0)
    other = ReplaySummary("p", {"start": "x", "end": "y"})
    with pytest.raises(ValueError, match="different"):
        ReplaySummary.combine([a, other])


# -- the shared budget ---------------------------------------------------------------------------------
def _ledger_factory(kind: str, tmp_path: Path):
    if kind == "sqlite":
        path = str(tmp_path / "ledger.db")
        return lambda: Ledger.sqlite(path)
    import psycopg

    postgres_connection().close()  # skips (or fails under CI=true) without a server
    return lambda: Ledger(lambda: psycopg.connect(PG_DSN), "%s")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_concurrent_reservations_never_exceed_the_limit(kind: str, tmp_path: Path) -> None:
    """Six workers, each with its own connection, reserve as fast as they can for ~4 windows:
    in no sliding window do the grants add up to more than the limit, and the budget is used."""
    make = _ledger_factory(kind, tmp_path)
    app = f"budget-test-{kind}-{time.time_ns()}"
    limit, window, until = 300, 1.0, time.monotonic() + 4.2
    grants: list[tuple[float, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        ledger = make()
        try:
            while time.monotonic() < until:
                granted, reservation, wait = ledger.reserve(app, f"w{n}", 40, limit, window, in_flight=5.0)
                if granted:
                    time.sleep(0.002)  # "sending"
                    stamp = time.time()
                    ledger.settle(reservation, granted)  # stamped when "Heap answered"
                    with lock:
                        grants.append((stamp, granted))
                else:
                    time.sleep(min(wait, 0.05))
        except BaseException as exc:
            errors.append(exc)
        finally:
            ledger.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    grants.sort()
    # Every grant was reserved before its stamp and counts for ``window`` after it; so within any
    # window ending at a stamp, no more than the limit was stamped (with the settle time's slack).
    worst = 0
    for i, (stamp, _) in enumerate(grants):
        inside = sum(n for t, n in grants[: i + 1] if t > stamp - window + 0.02)
        worst = max(worst, inside)
    assert worst <= limit, worst
    assert sum(n for _, n in grants) >= 3 * limit  # about four windows' worth was granted
    ledger = make()
    try:
        assert ledger.budget_used(app, window) <= limit
        ledger._execute(f"DELETE FROM {BUDGET} WHERE app_id = ?", [app])
        ledger.connection.commit()
    finally:
        ledger.close()


def test_a_dead_runs_reservation_holds_its_budget_until_it_expires(tmp_path: Path) -> None:
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    granted, _, _ = ledger.reserve("app", "dead", 80, 100, window=60.0, in_flight=0.5)
    assert granted == 80  # never settled: its process was killed
    assert ledger.reserve("app", "retry", 80, 100, window=60.0, in_flight=0.5)[0] == 20
    granted, reservation, wait = ledger.reserve("app", "retry", 80, 100, window=60.0, in_flight=0.5)
    assert (granted, reservation) == (0, None) and 60.0 < wait <= 60.5


def test_long_expired_reservations_are_removed(tmp_path: Path) -> None:
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    ledger.reserve("app", "old", 10, 100, window=60.0, in_flight=1.0)
    ledger._execute(f"UPDATE {BUDGET} SET stamp_epoch = ?", [time.time() - 3600])
    ledger.connection.commit()
    assert ledger.reserve("app", "new", 10, 100, window=60.0, in_flight=1.0)[0] == 10
    holders = [h for (h,) in ledger._execute(f"SELECT holder FROM {BUDGET}").fetchall()]
    assert holders == ["new"]
