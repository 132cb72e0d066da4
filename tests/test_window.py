"""The window rule: params first, then the data interval, else a clear error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from walkme_heap.window import Window, WindowError, resolve_window

D10 = datetime(2024, 3, 10, tzinfo=UTC)
D11 = datetime(2024, 3, 11, tzinfo=UTC)


def test_data_interval_is_used_without_params() -> None:
    window = resolve_window({}, D10, D11)
    assert (window.start, window.end, window.label) == (D10, D11, "2024-03-10")
    assert window.start_ms == 1710028800000 and window.end_ms == 1710115200000


def test_params_win_and_accept_dates_and_datetimes() -> None:
    window = resolve_window({"start": "2024-03-01", "end": "2024-03-03T12:00:00+02:00"}, D10, D11)
    assert window.start == datetime(2024, 3, 1, tzinfo=UTC)
    assert window.end == datetime(2024, 3, 3, 10, tzinfo=UTC)
    assert [d.isoformat() for d in window.days()] == ["2024-03-01", "2024-03-02", "2024-03-03"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2024-03-10"}, "fill in 'end' too"),
        ({"end": "2024-03-10"}, "fill in 'start' too"),
        ({"start": "2024-03-10", "end": "2024-03-09"}, "must be after its start"),
        ({"start": "2024-03-10", "end": "2024-03-10"}, "must be after its start"),
        ({"start": "10/03/2024", "end": "2024-03-11"}, "give a date like 2024-03-10"),
        ({"start": "2999-01-01", "end": "2999-01-02"}, "in the future"),
        ({"start": "2024-03-10", "end": "2999-01-02"}, "more than a day ahead"),
        ({"start": "2024-01-01", "end": "2024-12-31"}, "spans more than 92 days"),
    ],
)
def test_bad_params(params: dict, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        resolve_window(params, D10, D11, max_span=timedelta(days=92))


def test_a_run_without_interval_or_params_says_what_to_fill_in() -> None:
    with pytest.raises(WindowError, match="trigger it with the 'start' and 'end' params"):
        resolve_window({}, None, None)
    with pytest.raises(WindowError, match="no data interval"):
        resolve_window({}, D10, D10)  # zero-length interval, e.g. schedule="@daily" in Airflow 3


def test_naive_bounds_are_refused_for_windows() -> None:
    with pytest.raises(WindowError, match="timezone-aware"):
        Window(datetime(2024, 3, 10), D11)


def test_partial_day_label() -> None:
    assert resolve_window({"start": "2024-03-10T06:00", "end": "2024-03-10T07:00"}, None, None).label == (
        "2024-03-10T060000Z--2024-03-10T070000Z"
    )
