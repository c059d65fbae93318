"""The medians the beat-by-beat code uses, against the library definitions they stand in for."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signal.small_stats import median, median_rows

FINITE = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(FINITE, min_size=1, max_size=20))
def test_median_is_statistics_median(values: list[float]) -> None:
    assert median(values) == statistics.median(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(FINITE, min_size=1, max_size=40))
def test_median_is_np_median(values: list[float]) -> None:
    # native_rhythm's base RR was np.median's, which imports numpy.ma into the daemon.
    assert median(values) == float(np.median(np.asarray(values)))


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 12), length=st.integers(1, 30), seed=st.integers(0, 2**32 - 1))
def test_median_rows_is_np_median_over_the_rows(rows: int, length: int, seed: int) -> None:
    a = np.random.default_rng(seed).normal(size=(rows, length))
    assert np.array_equal(median_rows(list(a)), np.median(a, axis=0))


def test_no_values_no_median() -> None:
    with pytest.raises(ValueError):
        median([])
    with pytest.raises(ValueError):
        median_rows([])
