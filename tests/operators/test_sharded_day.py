"""A sharded day is judged as a day: rows that cannot be split (an empty identity) all land in one
shard, so its share of invalid rows is up to K times the day's; ``max_invalid_ratio`` applies to the
day's summary (the summary task), never to one shard."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.helpers import write_day
from walkme_heap.emulator import HeapEmulator
from walkme_heap.operators.replay import WalkMeToHeapOperator
from walkme_heap.operators.summary import ReplaySummaryOperator

SHARDS = 4
CONTEXT: dict[str, Any] = {
    "params": {},
    "data_interval_start": datetime(2024, 3, 10, tzinfo=UTC),
    "data_interval_end": datetime(2024, 3, 11, tzinfo=UTC),
    "run_id": "scheduled__2024-03-10",
}


def shard_summaries(path: Path, ratio: float) -> list[dict[str, Any]]:
    mapping = {"event_name": {"event_type": "complete"}}
    summaries = []
    for shard in range(SHARDS):
        task = WalkMeToHeapOperator(
            task_id="replay",
            pipeline="sharded",
            source={"path": str(path)},
            mapping=mapping,
            max_invalid_ratio=ratio,
            shard=shard,
            shards=SHARDS,
        )
        summaries.append(task.execute(dict(CONTEXT)))  # type: ignore[arg-type]
    return summaries


def summary_task(summaries: list[dict[str, Any]], ratio: float) -> ReplaySummaryOperator:
    return ReplaySummaryOperator(
        task_id="summary", pipeline="sharded", summaries=summaries, shards=SHARDS, max_invalid_ratio=ratio
    )


def test_a_shard_holding_the_days_invalid_rows_does_not_fail_a_day_within_bounds(
    heap_connection: HeapEmulator, tmp_path: Path
) -> None:
    """6 invalid rows of 206 (2.9%): within 10% for the day, about 10% and more for the shard that
    gets the empty identities."""
    path = write_day(tmp_path / "day.csv", 200, invalid=6)
    summaries = shard_summaries(path, ratio=0.05)
    invalid = [s["invalid"] / s["read"] for s in summaries]
    assert max(invalid) > 0.05  # one shard alone is over the bound ...
    day = summary_task(summaries, 0.05).execute(dict(CONTEXT))  # type: ignore[arg-type]
    assert (day["read"], day["sent"], day["invalid"]) == (206, 200, 6)  # ... the day is not


def test_the_day_over_the_bound_fails_in_the_summary_task(
    heap_connection: HeapEmulator, tmp_path: Path
) -> None:
    path = write_day(tmp_path / "day.csv", 40, invalid=6)  # 6 of 46: 13%
    summaries = shard_summaries(path, ratio=0.1)  # every shard sends its valid events
    assert sum(s["sent"] for s in summaries) == 40
    with pytest.raises(AirflowFailException, match=r"6 of 46 rows \(13.0%\) were invalid or rejected"):
        summary_task(summaries, 0.1).execute(dict(CONTEXT))  # type: ignore[arg-type]
