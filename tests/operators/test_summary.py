"""A sharded day's summary task: it fails when a shard's summary is missing or the counts do not
add up, without Airflow retries (a retry would find the same summaries)."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.helpers import DAY
from walkme_heap.operators.summary import ReplaySummaryOperator
from walkme_heap.summary import ReplaySummary


def _shard(index: int, read: int, sent: int, invalid: int = 0) -> dict:
    summary = ReplaySummary("p", DAY.as_dict(), read=read, sent=sent, shard=f"{index}/3")
    if invalid:
        summary.invalid["missing_identity"] = invalid
    return summary.as_dict()


def _summarise(summaries: list) -> dict:
    return ReplaySummaryOperator(task_id="summary", pipeline="p", summaries=summaries, shards=3).execute({})


def test_the_day_is_the_sum_of_its_shards() -> None:
    day = _summarise([_shard(1, 4, 4), _shard(2, 3, 2, invalid=1), _shard(3, 5, 5)])
    assert (day["read"], day["sent"], day["invalid"], day["shard"]) == (12, 11, 1, "3 shards")


def test_a_missing_shard_fails_the_day() -> None:
    with pytest.raises(AirflowFailException, match="pipeline 'p': 2 of 3 shard summaries arrived"):
        _summarise([_shard(1, 4, 4), None, _shard(3, 5, 5)])


def test_counts_that_do_not_add_up_fail_the_day() -> None:
    with pytest.raises(AirflowFailException, match="do not reconcile: 2 rows and 0 users unaccounted"):
        _summarise([_shard(1, 4, 4), _shard(2, 5, 3), _shard(3, 5, 5)])


def test_user_counts_that_do_not_add_up_fail_the_day() -> None:
    users = {**_shard(3, 5, 5), "users": 4, "users_updated": 2, "users_unchanged": 1}
    with pytest.raises(AirflowFailException, match="do not reconcile: 0 rows and 1 users unaccounted"):
        _summarise([_shard(1, 4, 4), _shard(2, 3, 3), users])
    users["users_refused"] = 1
    day = _summarise([_shard(1, 4, 4), _shard(2, 3, 3), users])
    assert (day["users"], day["users_updated"], day["users_refused"]) == (4, 2, 1)


def test_summaries_of_another_window_fail_the_day() -> None:
    other = {**_shard(3, 5, 5), "window": {"start": "2024-03-11T00:00:00+00:00", "end": "x"}}
    with pytest.raises(AirflowFailException, match="different pipelines or windows cannot be combined"):
        _summarise([_shard(1, 4, 4), _shard(2, 3, 3), other])


def test_events_past_the_lateness_are_named_with_the_manual_run_that_sends_them(
    capfd: pytest.CaptureFixture[str],
) -> None:
    parts = [_shard(1, 4, 4), _shard(2, 3, 2), _shard(3, 5, 5)]
    parts[1]["skipped"], parts[1]["skipped_by_reason"] = 1, {"later_than_lateness": 1}
    parts[1]["past_bound_by_day"] = {"2024-03-06": 1}
    parts[2]["past_bound_by_day"] = {}
    day = _summarise(parts)
    assert day["past_bound_by_day"] == {"2024-03-06": 1} and day["oldest_late_day"] == "2024-03-06"
    (warning,) = [line for line in capfd.readouterr().out.splitlines() if "arrived later than" in line]
    assert "1 event(s) arrived later than the pipeline's lateness allows" in warning
    assert """--conf '{"start": "2024-03-06", "end": "2024-03-11"}'""" in warning
