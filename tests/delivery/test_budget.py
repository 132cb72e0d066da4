"""The app's rate budget behind one interface: which way it is kept for a run, and that each way
grants, waits and counts as the pacer relies on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.helpers import FakeClock, OthersUsage
from walkme_heap.delivery.budget import (
    MARGIN_SECONDS,
    UNLIMITED,
    WINDOW_SECONDS,
    LocalBudget,
    ObservedBudget,
    ReservedBudget,
    Usage,
    app_budget,
    identity_hash,
)
from walkme_heap.ledger import Ledger
from walkme_heap.ledger.budget import decode_identities, encode_identities


def observed_budget(ledger: Ledger, holder: str, clock: FakeClock) -> ObservedBudget:
    """What ``app_budget`` keeps on a ledger database that cannot serialise reservations (each of the
    ledger's databases can, since MySQL/MariaDB's lock row): the others' sends read from the ledger."""
    store, window = ledger.budget, WINDOW_SECONDS + MARGIN_SECONDS
    return ObservedBudget(
        100,
        lambda seconds: Usage(*store.usage("app", holder, seconds)),
        clock,
        record=lambda events, identities: store.record("app", holder, events, identities, window),
    )


class Chooser:
    """A pacer's ``choose``: takes ``size`` events (at most the room) with ``identities``, and
    remembers every room and every other runs' usage it was offered."""

    def __init__(self, size: int, identities: dict[int, int] | None = None) -> None:
        self.size, self.identities = size, identities or {}
        self.offers: list[tuple[int, dict]] = []

    def __call__(self, room: int, others: dict) -> tuple[int, dict[int, int]]:
        self.offers.append((room, others))
        return min(self.size, room), self.identities


def take(budget, wanted: int, size: int | None = None, identities: dict[int, int] | None = None):
    return budget.take(wanted, Chooser(wanted if size is None else size, identities))


def test_which_budget_a_run_keeps(tmp_path: Path) -> None:
    clock = FakeClock()
    sqlite_ledger = Ledger.sqlite(str(tmp_path / "a.db"))
    common = {"app_id": "app", "holder": "run-1", "retry_seconds": 20.0, "clock": clock}
    assert app_budget(None, ledger=None, **common) is None  # no limit, nothing to share: no budget
    assert app_budget(None, ledger=sqlite_ledger, **common, per_identity=False) is None
    only_identities = app_budget(None, ledger=sqlite_ledger, **common)  # no app limit: identities shared
    assert isinstance(only_identities, ReservedBudget) and only_identities.limit == UNLIMITED
    assert type(app_budget(100, ledger=None, **common)) is LocalBudget
    reserved = app_budget(100, ledger=sqlite_ledger, **common)
    assert isinstance(reserved, ReservedBudget) and reserved.in_flight == 80.0  # retries + an answer
    assert type(app_budget(100, ledger=sqlite_ledger, **{**common, "app_id": None})) is LocalBudget


def test_a_local_budget_counts_what_heap_acknowledged_in_the_window() -> None:
    clock = FakeClock()
    budget = LocalBudget(10, clock)
    assert take(budget, 6, size=4) == (4, 0.0)  # nothing is held before Heap answers ...
    chooser = Chooser(20)
    assert budget.take(20, chooser) == (10, 0.0) and chooser.offers == [(10, {})]  # ... so all 10 again
    budget.acknowledged(10)
    clock.advance(30)
    never = Chooser(1)
    taken, wait = budget.take(1, never)
    assert taken == 0 and wait == pytest.approx(WINDOW_SECONDS + MARGIN_SECONDS - 30)
    assert never.offers == []  # no room: nothing to choose from
    clock.advance(wait)
    assert take(budget, 3) == (3, 0.0)


def test_an_observed_budget_adds_what_others_sent_and_asks_once_a_second() -> None:
    clock = FakeClock()
    others = OthersUsage(7)
    budget = ObservedBudget(10, others, clock)
    assert take(budget, 5) == (3, 0.0)
    others.sent = 10
    assert take(budget, 5) == (3, 0.0)  # asked again only a second later
    clock.advance(1.0)
    taken, wait = take(budget, 5)
    assert (taken, wait) == (0, 1.0)  # others' sends may expire: look again in a second
    assert others.asked == [WINDOW_SECONDS + MARGIN_SECONDS] * 2


def test_a_reserved_budget_holds_its_reservation_until_heap_answers(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
    mine = ReservedBudget(ledger.budget, "app", "me", limit=10, in_flight=80.0)
    other = ReservedBudget(ledger.budget, "app", "other", limit=10, in_flight=80.0)
    assert take(mine, 8, size=6) == (6, 0.0)  # the batch was smaller: only 6 are held
    assert take(other, 10)[0] == 4
    other.acknowledged(4)
    other.done()  # answered: counts one window from now
    clock.advance(61.0)  # other's 4 left the window; mine, unanswered, still counts (80 s ahead)
    assert take(other, 10, size=0) == (0, 0.0)  # room for 4, nothing chosen: nothing held
    mine.acknowledged(6)  # a first batch of the take answered: still held 80 s ahead ...
    clock.advance(30.0)
    offered = Chooser(0)
    other.take(10, offered)
    assert offered.offers[0][0] == 4  # ... its other batches may still be retried
    mine.done()  # every batch answered: counts one window from now
    clock.advance(WINDOW_SECONDS)
    assert take(other, 10, size=0)[0] == 0 and budget_held(ledger) == 6  # mine's 6 still count
    clock.advance(MARGIN_SECONDS)
    assert take(other, 10) == (10, 0.0)
    ledger.close()


def budget_held(ledger: Ledger) -> int:
    return int(ledger.database.fetch("SELECT coalesce(sum(events), 0) FROM walkme_heap_budget")[0][0])


@pytest.mark.parametrize("kind", ["reserved", "observed"])
def test_each_identitys_sends_are_shared_with_the_other_runs(kind: str, tmp_path: Path) -> None:
    """What one run sent (or is sending) to an identity counts in every other run's pacing, by a
    hash of the identity; a run does not see its own, and it leaves with the window."""
    clock = FakeClock()
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
    common = {"ledger": ledger, "app_id": "app", "retry_seconds": 20.0, "clock": clock}
    if kind == "reserved":
        yesterday = app_budget(100, holder="day-1", **common)
        today = app_budget(100, holder="day-2", **common)
    else:
        yesterday, today = observed_budget(ledger, "day-1", clock), observed_budget(ledger, "day-2", clock)
    assert type(yesterday) is {"reserved": ReservedBudget, "observed": ObservedBudget}[kind]
    heavy, light = identity_hash("heavy-user"), identity_hash("light-user")
    assert take(yesterday, 40, identities={heavy: 30, light: 10})[0] == 40
    yesterday.acknowledged(40)
    yesterday.done()
    clock.advance(1.0)
    offered = Chooser(0)
    today.take(10, offered)
    ((_, seen),) = offered.offers
    assert sorted(seen) == sorted([heavy, light])
    ((until, count),) = seen[heavy]
    assert count == 30 and until == pytest.approx(clock() + WINDOW_SECONDS + MARGIN_SECONDS - 1.0, abs=0.01)
    own = Chooser(0)
    yesterday.take(10, own)
    assert own.offers[0][1] == {}  # its own are not "others"
    clock.advance(WINDOW_SECONDS + MARGIN_SECONDS)
    later = Chooser(0)
    today.take(10, later)
    assert later.offers[0][1] == {}  # left the window
    raw = ledger.database.fetch("SELECT identities FROM walkme_heap_budget WHERE identities IS NOT NULL")
    assert raw and all(b"heavy-user" not in bytes(blob) for (blob,) in raw)  # hashes, not identities
    ledger.close()


def test_a_throttled_reservation_keeps_only_what_heap_acknowledged(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=clock.time)
    mine = ReservedBudget(ledger.budget, "app", "me", limit=10, in_flight=80.0)
    other = ReservedBudget(ledger.budget, "app", "other", limit=10, in_flight=80.0)
    assert take(mine, 8, identities={identity_hash("u"): 8}) == (8, 0.0)
    mine.done()  # Heap answered 429 to all of it: nothing was taken
    assert budget_held(ledger) == 0 and take(other, 10, size=0) == (0, 0.0)
    assert take(mine, 8) == (8, 0.0)
    mine.acknowledged(4)  # half of it in a first request; the rest throttled
    mine.done()  # the rest goes back
    assert budget_held(ledger) == 4  # what Heap took, not the whole reservation
    assert take(mine, 2, size=2) == (2, 0.0)
    mine.done()  # answered none of it (refused events): nothing stays held
    assert budget_held(ledger) == 4
    ledger.close()


def test_a_run_holds_the_app_while_it_chooses(tmp_path: Path) -> None:
    """Two runs want the same heavy identity at once: the second one's choice waits for the first
    one's to be recorded, and sees it (before, a reservation's identities were written after the
    lock was let go, and both runs took the identity's whole minute)."""
    path = str(tmp_path / "ledger.db")
    heavy = identity_hash("heavy-user")
    first_inside, offers = threading.Event(), []

    def slow_choice(room: int, others: dict) -> tuple[int, dict[int, int]]:
        first_inside.set()
        time.sleep(0.5)  # the other run tries to choose meanwhile
        return 30, {heavy: 30}

    def second() -> None:
        first_inside.wait(5)
        store = Ledger.sqlite(path)
        budget = ReservedBudget(store.budget, "app", "run-b", limit=1000, in_flight=80.0)
        budget.take(1000, lambda room, others: (offers.append(others), (0, {}))[1])
        store.close()

    other = threading.Thread(target=second)
    other.start()
    store = Ledger.sqlite(path)
    ReservedBudget(store.budget, "app", "run-a", limit=1000, in_flight=80.0).take(1000, slow_choice)
    other.join(10)
    store.close()
    ((others,),) = [offers]
    assert [n for _, n in others[heavy]] == [30]


def test_identity_counts_are_stored_compactly() -> None:
    counts = {identity_hash(f"u{i}"): i + 1 for i in range(1000)}
    blob = encode_identities(counts)
    assert len(blob) == 12_000 and decode_identities(blob) == counts
