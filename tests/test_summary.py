"""The run's accounting: summaries round-trip through XCom and add up over a day's shards."""

from __future__ import annotations

import pytest

from tests.helpers import DAY
from walkme_heap.summary import ReplaySummary


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


def test_summary_names_the_heap_app_its_already_sent_refers_to() -> None:
    """Acknowledgements are per Heap app: the summary says which app "already sent" was counted for
    (an app id, not personal data), through XCom and over a day's shards."""
    a = ReplaySummary("p", DAY.as_dict(), read=2, already_sent=2, app_id="1234567890", shard="1/2")
    b = ReplaySummary("p", DAY.as_dict(), read=1, sent=1, app_id="1234567890", shard="2/2")
    assert a.as_dict()["app_id"] == "1234567890"
    assert ReplaySummary.from_dict(a.as_dict()) == a
    assert ReplaySummary.combine([a, b]).app_id == "1234567890"
    assert "Heap app" in a.table() and "1234567890" in a.table()
    unknown = ReplaySummary("p", DAY.as_dict(), dry_run=True)
    assert "any (no app id given)" in unknown.table()


def test_the_newest_event_heap_acknowledged_survives_xcom_and_is_the_days_newest_over_shards() -> None:
    """Not a count (outside the reconciliation): the freshness of Heap's data, behind the lag metric."""
    a = ReplaySummary("p", DAY.as_dict(), read=1, sent=1, newest_sent="2024-03-10T08:00:00.000+00:00")
    b = ReplaySummary("p", DAY.as_dict(), read=1, sent=1, newest_sent="2024-03-10T21:30:00.000+00:00")
    c = ReplaySummary("p", DAY.as_dict(), read=1, already_sent=1)  # nothing acknowledged in this run
    assert ReplaySummary.from_dict(b.as_dict()) == b
    assert ReplaySummary.from_dict({k: v for k, v in c.as_dict().items() if k != "newest_sent"}) == c
    total = ReplaySummary.combine([a, b, c])
    assert (total.newest_sent, total.unaccounted) == ("2024-03-10T21:30:00.000+00:00", 0)
    assert ReplaySummary.combine([c]).newest_sent is None
