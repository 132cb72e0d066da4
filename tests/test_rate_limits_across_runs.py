"""Heap's limits hold across runs, per identity too: the days of a backfill run one after another,
and pipelines and shards running at once into one app, get 0 answers 429 from the emulator with its
limits on, and every key arrives once. Everything shares one made-up clock (the emulator's limits,
the ledger's budget, the pacers), so minutes of pacing take no real time and the result is exact.

Small limits keep it short: 120 events a minute for the app and 30 for an identity; each day has a
heavy identity with a quarter of the day's events, so every run ends with that identity's events."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.helpers import DAY, FakeClock, expected_keys, received, replay_csv, stats, write_day
from walkme_heap.delivery.sender import RetryPolicy
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.sharding import Shard
from walkme_heap.window import Window

APP_LIMIT, IDENTITY_LIMIT = 120, 30


class FastClock:
    """Real time, ``speed`` times faster: threads really run at once (a fake clock that only sleeping
    advances would let one run's waits count for the others), and a minute takes 60/speed s."""

    def __init__(self, speed: float = 10.0, epoch: float = 1_700_000_000.0) -> None:
        self.speed, self.epoch = speed, epoch
        self.started = time.monotonic()

    def monotonic(self) -> float:
        return 1000.0 + (time.monotonic() - self.started) * self.speed

    def time(self) -> float:
        return self.epoch + self.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds / self.speed)


def day_window(offset: int) -> Window:
    return Window(DAY.start + timedelta(days=offset), DAY.end + timedelta(days=offset))


def replay_window(
    emulator: HeapEmulator,
    ledger: Ledger,
    clock: FakeClock | FastClock,
    pipeline: str,
    path: Path,
    window: Window,
    shard: Shard | None = None,
):
    return replay_csv(
        emulator,
        ledger,
        path,
        None,
        pipeline,
        window=window,
        read_timeout=10.0,
        app_limit=APP_LIMIT,
        identity_limit=IDENTITY_LIMIT,
        retry=RetryPolicy(base_seconds=0.5, max_seconds=120),
        clock=clock.monotonic,
        sleep=clock.sleep,
        shard=shard,
        run_id=f"backfill__{window.label}",
    )


def limited_emulator(clock: FakeClock | FastClock) -> HeapEmulator:
    settings = EmulatorSettings(app_limit=APP_LIMIT, identity_limit=IDENTITY_LIMIT)
    return HeapEmulator(settings=settings, clock=clock.time)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(clock: FakeClock):
    with limited_emulator(clock) as server:
        yield server


def test_consecutive_days_of_a_backfill_get_no_429(
    emulator: HeapEmulator, clock: FakeClock, tmp_path: Path
) -> None:
    """Each day's run starts right after the previous one ended with the heavy identity's events:
    it must wait for them to leave the window, which only the ledger can tell it."""
    store = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
    keys: set[str] = set()
    for offset in range(3):
        window = day_window(offset)
        path = write_day(tmp_path / f"day{offset}.csv", 160, invalid=0, start_ms=window.start_ms)
        keys |= expected_keys(path, window)
        summary = replay_window(emulator, store, clock, "backfill", path, window)
        assert summary.sent == 160 and summary.throttled == 0
    store.close()
    counts = stats(emulator)
    assert counts.get("throttled_429", 0) == 0
    got = [e["idempotency_key"] for e in received(emulator)]
    assert len(got) == len(set(got)) == len(keys) and set(got) == keys
    assert max(counts["per_minute"]["app"].values()) <= APP_LIMIT


def test_pipelines_and_shards_at_once_into_one_app_get_no_429(tmp_path: Path) -> None:
    """Two pipelines (the same users' webhook and report exports), two shards each, at once: the
    heavy identity's events come from both pipelines (about 3 minutes at 10x: 20 s)."""
    clock = FastClock(speed=10.0)
    emulator = limited_emulator(clock).start()
    keys: set[str] = set()
    jobs = []
    for name, offset in (("webhooks", 0), ("reports", 1)):
        window = day_window(0)
        path = write_day(tmp_path / f"{name}.csv", 160, first=offset * 1000, invalid=0)
        keys |= expected_keys(path, window)
        for index in range(2):
            jobs.append((name, path, window, Shard(index, 2)))
    errors: list[BaseException] = []

    def work(name: str, path: Path, window: Window, shard: Shard) -> None:
        store = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)  # one per worker
        try:
            replay_window(emulator, store, clock, name, path, window, shard)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    counts = stats(emulator)
    emulator.stop()
    assert not errors, errors
    assert counts.get("throttled_429", 0) == 0
    got = [e["idempotency_key"] for e in received(emulator)]
    assert len(got) == len(set(got)) and set(got) == keys
