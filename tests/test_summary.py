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
