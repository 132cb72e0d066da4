"""The dry run's logged samples: identities and property values are personal data (a user variable
may hold an e-mail address): the log keeps names, types and lengths, never values."""

from __future__ import annotations

import logging

import pytest

from walkme_heap.delivery.outbox import DryRunOutbox
from walkme_heap.summary import ReplaySummary


def test_dry_run_samples_mask_identities_and_property_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="walkme_heap.delivery.outbox")
    event = {
        "identity": "jane.doe@example.com",
        "event": "WalkMe Walk-thru Played",
        "timestamp": "2024-03-10T10:00:00.000+00:00",
        "properties": {"wm.userVars.email": "jane.doe@example.com", "wm.userVars.seats": 12},
        "idempotency_key": "wmh1-0123456789abcdef",
    }
    outbox = DryRunOutbox(ReplaySummary(pipeline="p", window={}), samples=3)
    outbox.put([event])
    outbox.finish()
    (line,) = [r.getMessage() for r in caplog.records if "sample payload" in r.getMessage()]
    assert "jane.doe" not in line and "example.com" not in line and "12" not in line.split("seats")[1][:12]
    assert '"wm.userVars.email":"<text, 20 chars>"' in line
    assert '"wm.userVars.seats":"<int>"' in line
    assert '"identity":"<20 chars>"' in line and "WalkMe Walk-thru Played" in line  # the mapping shows
