"""The app's rate budget behind one interface: which way it is kept for a run, and that each way
grants, waits and counts as the pacer relies on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.helpers import FakeClock, OthersUsage
from walkme_heap.delivery.budget import (
    MARGIN_SECONDS,
    WINDOW_SECONDS,
    LocalBudget,
    ObservedBudget,
    ReservedBudget,
    app_budget,
    identity_hash,
)
from walkme_heap.ledger import Ledger
from walkme_heap.ledger.budget import decode_identities, encode_identities


class OtherDriver:
    """A DB-API connection of a driver the ledger has no dialect for (it cannot serialise)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path)

    def __getattr__(self, name: str):
        return getattr(self._db, name)


def test_which_budget_a_run_keeps(tmp_path: Path) -> None:
    clock = FakeClock()
    sqlite_ledger = Ledger.sqlite(str(tmp_path / "a.db"))
    other_ledger = Ledger(lambda: OtherDriver(str(tmp_path / "b.db")), "?")
    common = {"app_id": "app", "holder": "run-1", "retry_seconds": 20.0, "clock": clock}
    assert app_budget(None, ledger=sqlite_ledger, **common) is None  # no limit: no budget
    assert type(app_budget(100, ledger=None, **common)) is LocalBudget
    reserved = app_budget(100, ledger=sqlite_ledger, **common)
    assert isinstance(reserved, ReservedBudget) and reserved.in_flight == 80.0  # retries + an answer
    assert type(app_budget(100, ledger=other_ledger, **common)) is ObservedBudget
    assert type(app_budget(100, ledger=sqlite_ledger, **{**common, "app_id": None})) is LocalBudget


def test_a_local_budget_counts_what_heap_acknowledged_in_the_window() -> None:
    clock = FakeClock()
    budget = LocalBudget(10, clock)
    assert budget.reserve(6) == (6, 0.0)
    budget.resize(4)  # nothing is held before Heap answers
    assert budget.reserve(20) == (10, 0.0)
    budget.acknowledged(10)
    clock.advance(30)
    granted, wait = budget.reserve(1)
    assert granted == 0 and wait == pytest.approx(WINDOW_SECONDS + MARGIN_SECONDS - 30)
    clock.advance(wait)
    assert budget.reserve(3) == (3, 0.0)


def test_an_observed_budget_adds_what_others_sent_and_asks_once_a_second() -> None:
    clock = FakeClock()
    others = OthersUsage(7)
    budget = ObservedBudget(10, others, clock)
    assert budget.reserve(5) == (3, 0.0)
    others.sent = 10
    assert budget.reserve(5) == (3, 0.0)  # asked again only a second later
    clock.advance(1.0)
    granted, wait = budget.reserve(5)
    assert (granted, wait) == (0, 1.0)  # others' sends may expire: look again in a second
    assert others.asked == [WINDOW_SECONDS + MARGIN_SECONDS] * 2


def test_a_reserved_budget_holds_its_reservation_until_heap_answers(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
    mine = ReservedBudget(ledger.budget, "app", "me", limit=10, in_flight=80.0)
    other = ReservedBudget(ledger.budget, "app", "other", limit=10, in_flight=80.0)
    assert mine.reserve(8) == (8, 0.0)
    mine.resize(6)  # the batch was smaller: 2 go back at once
    assert other.reserve(10)[0] == 4
    other.acknowledged(4)  # answered: counts one window from now
    clock.advance(61.0)  # other's 4 left the window; mine, unanswered, still counts (80 s ahead)
    assert other.reserve(10)[0] == 4
    other.resize(0)  # nothing to send after all: all 4 go back
    mine.acknowledged(6)  # answered now: counts one window from now, no longer 80 s ahead
    clock.advance(WINDOW_SECONDS)
    assert other.reserve(10) == (4, 0.0)  # mine's 6 are still in the window (and its margin)
    other.resize(0)
    clock.advance(MARGIN_SECONDS)
    assert other.reserve(10) == (10, 0.0)


@pytest.mark.parametrize("kind", ["reserved", "observed"])
def test_each_identitys_sends_are_shared_with_the_other_runs(kind: str, tmp_path: Path) -> None:
    """What one run sent (or is sending) to an identity counts in every other run's pacing, by a
    hash of the identity; a run does not see its own, and it leaves with the window."""
    clock = FakeClock()
    ledger = (
        Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
        if kind == "reserved"
        else Ledger(lambda: OtherDriver(str(tmp_path / "other.db")), "?", clock=clock.time)
    )
    common = {"ledger": ledger, "app_id": "app", "retry_seconds": 20.0, "clock": clock}
    yesterday = app_budget(100, holder="day-1", **common)
    today = app_budget(100, holder="day-2", **common)
    assert type(yesterday) is {"reserved": ReservedBudget, "observed": ObservedBudget}[kind]
    heavy, light = identity_hash("heavy-user"), identity_hash("light-user")
    assert yesterday.reserve(40)[0] == 40
    yesterday.resize(40, {heavy: 30, light: 10})
    yesterday.acknowledged(40)
    clock.advance(1.0)
    today.reserve(10)
    seen = today.others()
    assert sorted(seen) == sorted([heavy, light])
    ((until, count),) = seen[heavy]
    assert count == 30 and until == pytest.approx(clock() + WINDOW_SECONDS + MARGIN_SECONDS - 1.0, abs=0.01)
    assert yesterday.reserve(10)[0] and yesterday.others() == {}  # its own are not "others"
    today.resize(0)
    yesterday.resize(0)
    clock.advance(WINDOW_SECONDS + MARGIN_SECONDS)
    today.reserve(10)
    assert today.others() == {}  # left the window
    raw = ledger.database.fetch("SELECT identities FROM walkme_heap_budget WHERE identities IS NOT NULL")
    assert raw and all(b"heavy-user" not in bytes(blob) for (blob,) in raw)  # hashes, not identities
    ledger.close()


def test_a_throttled_reservation_goes_back(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
    mine = ReservedBudget(ledger.budget, "app", "me", limit=10, in_flight=80.0)
    other = ReservedBudget(ledger.budget, "app", "other", limit=10, in_flight=80.0)
    assert mine.reserve(8) == (8, 0.0)
    mine.resize(8, {identity_hash("u"): 8})
    mine.release()  # Heap answered 429: nothing of it was taken
    assert other.reserve(10)[0] == 10
    ledger.close()


def test_identity_counts_are_stored_compactly() -> None:
    counts = {identity_hash(f"u{i}"): i + 1 for i in range(1000)}
    blob = encode_identities(counts)
    assert len(blob) == 12_000 and decode_identities(blob) == counts
