"""The detector's candidate decisions run on Python floats read from a memoryview of the envelope;
here they are checked against their numpy definitions (the detector's previous code), on random
envelopes and detector states.

Any difference in a look-ahead or a look-back index would move or drop beats, so each is compared
exactly, including the edge cases: no sample below a threshold, a candidate near the start of
the buffer, a look-ahead cut short by the end of the buffer, ties.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signal.rpeak_detector import (
    DetectorState,
    _exceeds,
    _first_at_or_below,
    _last_at_or_below,
    _lookahead,
    _turning_points,
    new_state,
)

# Envelope values from a few levels, so that ties and values exactly on a threshold happen often.
_values = st.one_of(
    st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0]),
    st.floats(min_value=0.0, max_value=5.0, allow_nan=False, allow_infinity=False),
)


def _reference_lookahead(state: DetectorState, buf_f: np.ndarray, i: int, fp: float, learnt: bool) -> int:
    seg = buf_f[max(0, i - state.max_rise) : i]
    below = (seg <= 0.5 * fp).nonzero()[0]
    rise = len(seg) - int(below[-1]) if len(below) else state.max_rise
    below = (seg <= max(state.foot_ratio * max(fp, state.signal_level), state.noise_level)).nonzero()[0]
    foot = len(seg) - int(below[-1]) if len(below) and learnt else 0
    la = max(state.min_lookahead, min(state.lookahead, state.budget - rise, state.foot_budget - foot))
    sure = state.signal_level > 0 and fp >= state.sure_ratio * state.signal_level
    end = (state.sure_end_ratio if sure else state.end_ratio) * fp
    gone = (buf_f[i + 1 : i + la + 1] <= end).nonzero()[0]
    if len(gone):
        la = max(state.min_lookahead, int(gone[0]) + 1)
    return la


@settings(max_examples=400, deadline=None)
@given(
    data=st.data(),
    fs=st.sampled_from([100.0, 250.0, 360.0]),
    levels=st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), st.sampled_from([0.0, 0.1, 0.5, 1.0])),
    learnt=st.booleans(),
)
def test_lookahead_equals_its_numpy_definition(
    data: st.DataObject, fs: float, levels: tuple[float, float], learnt: bool
) -> None:
    state = new_state(fs)
    state.signal_level, state.noise_level = levels
    f = data.draw(st.lists(_values, min_size=1, max_size=state.max_rise + state.lookahead + 40))
    i = data.draw(st.integers(min_value=0, max_value=len(f) - 1))
    fp = f[i]
    buf = np.asarray(f, dtype=np.float64)
    expected = _reference_lookahead(state, buf, i, fp, learnt)
    assert _lookahead(state, memoryview(buf), i, fp, learnt) == expected  # sample by sample
    tops, state.turns, state.rises_first = _turning_points(buf)  # by monotone runs, as extend sets them
    state.tops = tops.tolist()
    assert _lookahead(state, memoryview(buf), i, fp, learnt) == expected


@given(
    f=st.lists(_values, max_size=60),
    lo=st.integers(min_value=0, max_value=60),
    hi=st.integers(min_value=0, max_value=60),
    threshold=_values,
)
def test_last_at_or_below_equals_nonzero(f: list[float], lo: int, hi: int, threshold: float) -> None:
    hi = min(hi, len(f))
    buf = np.asarray(f, dtype=np.float64)
    below = (buf[lo:hi] <= threshold).nonzero()[0]
    expected = lo + int(below[-1]) if len(below) else -1
    assert _last_at_or_below(memoryview(buf), lo, hi, threshold) == expected


@settings(max_examples=400, deadline=None)
@given(data=st.data(), f=st.lists(_values, min_size=1, max_size=80))
def test_exceeds_equals_a_reduction_over_the_stretch(data: st.DataObject, f: list[float]) -> None:
    buf = np.asarray(f, dtype=np.float64)
    lo = data.draw(st.integers(min_value=0, max_value=len(f) - 1))
    hi = data.draw(st.integers(min_value=lo, max_value=len(f) - 1))
    level = data.draw(st.one_of(_values, st.sampled_from(f)))
    tops = [t + 1 for t in ((buf[1:-1] > buf[:-2]) & (buf[1:-1] >= buf[2:])).nonzero()[0].tolist()]
    got = _exceeds(memoryview(buf), tops, [f[t] for t in tops], lo, hi, level)
    assert got == (float(buf[lo : hi + 1].max()) > level)


# Envelopes with runs: smooth stretches, plateaus (ties between neighbours), single-sample wiggles.
_shapes = st.lists(
    st.tuples(st.sampled_from(["up", "down", "flat", "noise"]), st.integers(1, 25), _values), min_size=1, max_size=8
)


def _envelope(shapes: list[tuple[str, int, float]]) -> list[float]:
    f: list[float] = []
    for kind, n, v in shapes:
        start = f[-1] if f else v
        if kind == "flat":
            f += [start] * n
        elif kind == "noise":
            f += [v, start] * n
        else:
            step = (v - start) / n if kind == "up" else (start - v) / n
            f += [start + step * (k + 1) for k in range(n)]
    return f


@settings(max_examples=500, deadline=None)
@given(data=st.data(), shapes=_shapes, plain=st.lists(_values, max_size=60), use_plain=st.booleans())
def test_run_scans_equal_the_sample_by_sample_scans(
    data: st.DataObject, shapes: list[tuple[str, int, float]], plain: list[float], use_plain: bool
) -> None:
    f = plain if use_plain else _envelope(shapes)
    buf = np.asarray(f, dtype=np.float64)
    tops, turns, rises_first = _turning_points(buf)
    # The tops are exactly the local maxima the detector has always used; the turns are the tops
    # and the bottoms by their definitions, alternating from a top when the envelope starts rising.
    assert tops.tolist() == [t + 1 for t in ((buf[1:-1] > buf[:-2]) & (buf[1:-1] >= buf[2:])).nonzero()[0].tolist()]
    assert (turns is None) == (len(f) < 3)
    if turns is not None:
        bottoms = [b + 1 for b in ((buf[1:-1] <= buf[:-2]) & (buf[1:-1] < buf[2:])).nonzero()[0].tolist()]
        assert turns == sorted(tops.tolist() + bottoms)
        assert turns[0 if rises_first else 1 :: 2] == tops.tolist()
        assert rises_first == (f[1] > f[0])
    view = memoryview(buf)
    for _ in range(6):
        lo = data.draw(st.integers(0, len(f)))
        hi = data.draw(st.integers(lo, len(f)))
        threshold = data.draw(st.one_of(_values, st.sampled_from(f)) if f else _values)
        below = (buf[lo:hi] <= threshold).nonzero()[0]
        last = lo + int(below[-1]) if len(below) else -1
        first = lo + int(below[0]) if len(below) else -1
        assert _last_at_or_below(view, lo, hi, threshold, turns, rises_first) == last
        assert _first_at_or_below(view, lo, hi, threshold, turns, rises_first) == first
        assert _last_at_or_below(view, lo, hi, threshold) == last  # sample by sample
        assert _first_at_or_below(view, lo, hi, threshold) == first


def test_an_envelope_that_is_not_finite_is_scanned_sample_by_sample() -> None:
    buf = np.array([0.0, 1.0, np.nan, 0.5, 2.0, 1.0, 0.0])
    tops, turns, _ = _turning_points(buf)
    assert turns is None
    assert tops.tolist() == [4]  # by the definition: f[1] >= NaN is false, so 1 is no top
