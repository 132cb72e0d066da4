"""A run's form params besides its window: flags as text or booleans, a trial run's row limit."""

from __future__ import annotations

import pytest

from walkme_heap.run_params import ParamError, row_limit, truthy
from walkme_heap.sharding import Shard


@pytest.mark.parametrize("value", [True, 1, "1", "true", "TRUE", " yes ", "on"])
def test_flags_that_are_on(value: object) -> None:
    assert truthy(value)


@pytest.mark.parametrize("value", [False, 0, None, "", "0", "false", "no", "off", "nope"])
def test_flags_that_are_off(value: object) -> None:
    assert not truthy(value)


def test_a_row_limit() -> None:
    assert (row_limit(None), row_limit(""), row_limit(3), row_limit("1000")) == (None, None, 3, 1000)
    with pytest.raises(ParamError, match="param 'limit' must be a whole number of rows, got 'ten'"):
        row_limit("ten")
    with pytest.raises(ParamError, match="param 'limit' must be at least 1, got 0"):
        row_limit(0)


def test_a_shard_of_a_task() -> None:
    assert Shard.of(None, 1) is None and Shard.of(0, 1) is None  # an unsharded window
    assert Shard.of(2, 4) == Shard(2, 4)
    with pytest.raises(ValueError, match=r"shard index 4 is not in 0\.\.3"):
        Shard.of(4, 4)
