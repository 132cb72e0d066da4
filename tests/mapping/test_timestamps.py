"""Event times from text: the one-pass read of all-digit columns gives what the general path gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from walkme_heap.mapping.timestamps import INVALID_MS, _from_text, format_ms, to_epoch_ms


def general(values: list[str | None]) -> list[int]:
    """The path every text column took before the all-digits one."""
    return _from_text(pd.Series(values, dtype="str")).tolist()


@pytest.mark.parametrize(
    "value",
    [
        "1710028800123",  # ms
        "1710028800",  # s
        "0001710028800",
        "0",
        "99999999999999",  # past year 9999: invalid
        "99999999999999999999999",  # beyond int64
        "9" * 5000,  # beyond what int() reads from text (4,300 digits)
        " 1710028800123",
        "1_710_028_800_000",  # Python's int() reads it; a time it is not
        "+1710028800000",
        "\uff11\uff17\uff11\uff10\uff10",  # full-width digits: int() reads them too
        "²",
        "2024-03-10T00:00:00Z",
        "",
        None,
    ],
)
def test_a_value_alone_and_among_plain_digits_reads_as_the_general_path_reads_it(value: str | None) -> None:
    for values in ([value], ["1710028800123", value, "1710028800"]):
        assert to_epoch_ms(pd.Series(values, dtype="str")).tolist() == general(values)


@given(st.lists(st.text(alphabet="0123456789", min_size=1, max_size=22), min_size=1, max_size=20))
def test_any_digit_strings_read_as_the_general_path_reads_them(values: list[str]) -> None:
    assert to_epoch_ms(pd.Series(values, dtype="str")).tolist() == general(values)


def test_digits_are_epoch_milliseconds_or_seconds() -> None:
    ms = to_epoch_ms(pd.Series(["1710028800123", "1710028800", "x"], dtype="str"))
    assert ms.tolist() == [1710028800123, 1710028800000, INVALID_MS]
    assert format_ms(ms[:1]).tolist() == ["2024-03-10T00:00:00.123+00:00"]
    assert ms.dtype == np.int64
