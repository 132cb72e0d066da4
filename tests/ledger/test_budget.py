"""The stored half of an app's shared rate budget: reservations that any number of processes make
at once never add up to more than the limit (SQLite, PostgreSQL and MariaDB, each worker with a
session of its own), a dead run's reservation holds until it expires, and long-expired ones are
removed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.helpers import FakeClock, budget_used, mariadb_ledger, postgres_ledger, run_in_threads
from walkme_heap.ledger import Ledger
from walkme_heap.ledger.budget import TABLE


def _ledger_factory(kind: str, tmp_path: Path):
    if kind == "sqlite":
        path = str(tmp_path / "ledger.db")
        return lambda: Ledger.sqlite(path)
    make = postgres_ledger if kind == "postgres" else mariadb_ledger
    make().close()  # skips (or fails under CI=true) without a server
    return make


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
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
                granted, reservation, wait = ledger.budget.reserve(
                    app, f"w{n}", 40, limit, window, in_flight=5.0
                )
                if granted:
                    time.sleep(0.002)  # "sending"
                    stamp = time.time()
                    ledger.budget.settle(reservation, granted)  # stamped when "Heap answered"
                    with lock:
                        grants.append((stamp, granted))
                else:
                    time.sleep(min(wait, 0.05))
        except BaseException as exc:
            errors.append(exc)
        finally:
            ledger.close()

    run_in_threads(worker, 6)
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
        assert budget_used(ledger, app, window, time.time()) <= limit
        ledger.database.write(f"DELETE FROM {TABLE.name} WHERE app_id = ?", [app])
    finally:
        ledger.close()


def test_a_dead_runs_reservation_holds_its_budget_until_it_expires(tmp_path: Path) -> None:
    """The ledger's clock is a fake one that does not move: the wait is exact, however slowly the
    three transactions run on a loaded machine."""
    budget = Ledger.sqlite(str(tmp_path / "ledger.db"), clock=FakeClock().time).budget
    granted, _, _ = budget.reserve("app", "dead", 80, 100, window=60.0, in_flight=0.5)
    assert granted == 80  # never settled: its process was killed
    assert budget.reserve("app", "retry", 80, 100, window=60.0, in_flight=0.5)[0] == 20
    granted, reservation, wait = budget.reserve("app", "retry", 80, 100, window=60.0, in_flight=0.5)
    assert (granted, reservation) == (0, None) and 60.0 < wait <= 60.5
    assert wait == 60.5  # the dead run's stamp (now + 0.5 in flight) plus the window


def test_long_expired_reservations_are_removed(tmp_path: Path) -> None:
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    ledger.budget.reserve("app", "old", 10, 100, window=60.0, in_flight=1.0)
    ledger.database.write(f"UPDATE {TABLE.name} SET stamp_epoch = ?", [time.time() - 3600])
    assert ledger.budget.reserve("app", "new", 10, 100, window=60.0, in_flight=1.0)[0] == 10
    holders = [h for (h,) in ledger.database.fetch(f"SELECT holder FROM {TABLE.name}")]
    assert holders == ["new"]
