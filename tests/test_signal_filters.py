"""Our numpy Butterworth designs and the light kernel against scipy.signal (imported only here)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import signal

from gateway.signal.ecg_filters import (
    SosFilter,
    all_finite,
    butter2_bandpass,
    butter2_lowpass,
    filter_once,
    steady_state,
)


def response(sos: np.ndarray, fs: float) -> np.ndarray:
    return signal.sosfreqz(sos, worN=512, fs=fs)[1]


@pytest.mark.parametrize("fs", [100.0, 130.0, 250.0, 360.0, 500.0, 1000.0])
@pytest.mark.parametrize(("lo", "hi"), [(5.0, 18.0), (1.0, 40.0)])
def test_bandpass_matches_scipy_butter(fs: float, lo: float, hi: float) -> None:
    hi = min(hi, 0.45 * fs)
    ours = butter2_bandpass(lo, hi, fs)
    ref = signal.butter(2, (lo, hi), btype="bandpass", fs=fs, output="sos")
    np.testing.assert_allclose(np.abs(response(ours, fs)), np.abs(response(ref, fs)), atol=1e-9)
    np.testing.assert_allclose(response(ours, fs), response(ref, fs), atol=1e-9)


@pytest.mark.parametrize("fs", [100.0, 360.0, 1000.0])
def test_lowpass_matches_scipy_butter(fs: float) -> None:
    ours = butter2_lowpass(4.0, fs)
    ref = signal.butter(2, 4.0, btype="lowpass", fs=fs, output="sos")
    np.testing.assert_allclose(response(ours, fs), response(ref, fs), atol=1e-9)


def test_steady_state_matches_sosfilt_zi_and_filtering_matches_sosfilt() -> None:
    sos = butter2_bandpass(5.0, 18.0, 360.0)
    np.testing.assert_allclose(steady_state(sos), signal.sosfilt_zi(sos), atol=1e-12)
    x = np.random.default_rng(0).normal(size=5000)
    np.testing.assert_allclose(filter_once(sos, x), signal.sosfilt(sos, x), rtol=1e-12, atol=1e-12)
    # Primed with the first value, a constant input gives no transient out of a band-pass.
    f = SosFilter.design(sos)
    np.testing.assert_allclose(f.run(np.full(100, 3.0)), 0.0, atol=1e-9)


def test_bad_designs_are_refused() -> None:
    with pytest.raises(ValueError, match="band"):
        butter2_bandpass(20.0, 10.0, 360.0)
    with pytest.raises(ValueError, match="cut-off"):
        butter2_lowpass(60.0, 100.0)


def test_detector_does_not_import_scipy_signal() -> None:
    code = (
        "import sys, numpy as np\n"
        "from gateway.signal.rpeak_detector import RPeakDetector\n"
        "from gateway.signal import ecg_quality\n"
        "RPeakDetector(250.0).feed(np.zeros(500))\n"
        "ecg_quality.feed(ecg_quality.new_quality_state(250.0), np.zeros(2000))\n"
        "print('scipy.signal' in sys.modules, 'scipy.linalg' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=50))
def test_all_finite_says_what_isfinite_says(values: list[float]) -> None:
    x = np.asarray(values, dtype=np.float64)
    assert all_finite(x) == bool(np.isfinite(x).all())


def test_all_finite_on_values_whose_squares_overflow() -> None:
    assert all_finite(np.array([1e200, -1e300, 0.5]))  # the sum of squares is inf, the values are not
    assert not all_finite(np.array([1e200, np.nan]))
    assert not all_finite(np.array([-np.inf, 1.0]))
    assert all_finite(np.zeros(0))


@given(st.lists(st.integers(1, 90), min_size=1, max_size=6), st.floats(-5, 5))
def test_filtering_in_place_gives_what_run_gives(sizes: list[int], offset: float) -> None:
    sos = butter2_bandpass(1.0, 30.0, 250.0)
    x = np.sin(np.arange(sum(sizes)) * 0.3) + offset
    copying, in_place = SosFilter.design(sos), SosFilter.design(sos)
    expected, got, pos = [], [], 0
    for n in sizes:
        expected.append(copying.run(x[pos : pos + n]))
        scratch = x[pos : pos + n].copy()
        out = in_place.run_in_place(scratch)
        assert out is scratch  # written over, no copy
        got.append(out)
        pos += n
    assert np.array_equal(np.concatenate(got), np.concatenate(expected))  # bit for bit, state included


def test_an_array_that_cannot_be_filtered_in_place_is_left_alone() -> None:
    sos = butter2_lowpass(10.0, 250.0)
    x32 = np.linspace(0, 1, 50, dtype=np.float32)
    strided = np.linspace(0, 1, 100)[::2]
    for x in (x32, strided):
        before = x.copy()
        out = SosFilter.design(sos).run_in_place(x)
        assert out is not x and np.array_equal(x, before)
        assert np.array_equal(out, SosFilter.design(sos).run(before))


_DOUBLES = st.floats(allow_nan=True, allow_infinity=True, width=64)


@given(
    parts=st.lists(st.lists(_DOUBLES, max_size=40), min_size=1, max_size=12),
    step=st.sampled_from([1, 1, 1, 2]),
)
def test_join_samples_is_concatenate_bit_for_bit(parts: list[list[float]], step: int) -> None:
    """join_samples (the bytes of the parts joined) gives np.concatenate's doubles, signed zeros and
    NaN payloads included, in a writable contiguous array; strided parts take np.concatenate."""
    from gateway.signal.ecg_filters import join_samples  # noqa: PLC0415

    arrays = [np.asarray(p, dtype=np.float64).repeat(step)[::step] for p in parts]
    joined = join_samples(arrays)
    expected = np.concatenate(arrays)
    assert joined.dtype == np.float64 and joined.shape == expected.shape
    assert joined.tobytes() == expected.tobytes()
    assert joined.flags.writeable and joined.flags.c_contiguous
    # The ECG channel queues the bytes of the caller's blocks beside arrays of its own.
    mixed = join_samples([a.tobytes() if i % 2 else a for i, a in enumerate(arrays)])
    assert mixed.tobytes() == expected.tobytes()
    assert mixed.flags.writeable and mixed.flags.c_contiguous


@given(
    parts=st.lists(st.lists(_DOUBLES, max_size=40), min_size=1, max_size=8),
    dtype=st.sampled_from([np.float64, np.float32, np.int16]),
)
def test_concatenate_is_np_concatenate_whatever_the_parts(parts: list[list[float]], dtype: type) -> None:
    """``concatenate`` takes the bytes join only where it gives np.concatenate's array: 1-D float64
    parts; other dtypes (a device's int16 counts, float32) and 2-D parts go to np.concatenate."""
    from gateway.signal.ecg_filters import concatenate  # noqa: PLC0415

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # casting inf/NaN to int16
        arrays = [np.asarray(p, dtype=np.float64).astype(dtype) for p in parts]
    for given_parts in (arrays, [a[:, None] for a in arrays]):  # 1-D, and columns
        got, expected = concatenate(given_parts), np.concatenate(given_parts)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()
