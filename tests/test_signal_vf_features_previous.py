"""The VF detector's cheaper code (spectrum in three stages, the phase-space grid marked in a byte
grid, numpy's FFT kernels called without their wrappers, the window ring shifted in place, the
band-pass run in place, the exit tested on log-odds, extremes read where argmin/argmax find them)
against the
previous definitions, copied here as they were (main at 18966c5): every feature of every window
and every step's recent peak must be the same number, bit for bit.  Hypothesis draws the
windows: noise, sines and spike trains at several amplitudes and rates, with ties and flat stretches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signal import vf_features
from gateway.signal.ecg_filters import SosFilter
from gateway.signal.vf_detector import (
    VfDetector,
    VfParams,
    decimation,
    exit_limit,
    feature_sos,
    sigmoid,
    window_length,
)
from gateway.signal.vf_features import FLAT, PSR_GRID, TCSC_LEVEL, _plan


def _previous_stages(x: np.ndarray, fs: float) -> Iterator[tuple[float, ...]]:
    """``vf_features.stages`` before this change (four stages: time domain, grid, spectrum, ACF)."""
    n = len(x)
    p = _plan(n, fs)
    ones = p.ones
    x = x - x.dot(ones[:n]) / n
    ax = np.abs(x)
    sum_ax = float(ax.dot(ones[:n]))
    dx = x[1:] - x[:-1]
    sum_dx = float(np.abs(dx, out=dx).dot(ones[: n - 1]))
    if sum_dx <= 0.0 or sum_ax <= 0.0:
        flat = [getattr(FLAT, name) for name in vf_features.FEATURE_NAMES]
        yield tuple(flat)
        return
    ratio = np.pi * sum_ax / sum_dx
    half = max(1, min(n // 2, int(ratio + 0.5)))
    leak = x[half:] + x[:-half]
    leak_num = float(np.abs(leak, out=leak).dot(ones[: n - half]))
    leakage = leak_num / (2.0 * sum_ax - float(ax[:half].dot(ones[:half])) - float(ax[-half:].dot(ones[:half])))
    mean_freq = fs / (2.0 * ratio)
    blocks = ax[: p.subs * p.sub].reshape(p.subs, p.sub)
    local_max = np.maximum.reduce(blocks, axis=1)
    tcsc = float(np.count_nonzero(blocks > TCSC_LEVEL * local_max[:, None])) / blocks.size
    lms = local_max.tolist()
    lm_mean = sum(lms) / p.subs
    amp_cv = math.sqrt(sum((v - lm_mean) ** 2 for v in lms) / p.subs) / lm_mean if lm_mean > 0 else 0.0
    x2 = x * x
    var = float(x.dot(x)) / n
    kurt = float(x2.dot(x2)) / n / (var * var)
    log_amp = float(np.log10(max(math.sqrt(var), 1e-6)))
    yield leakage, mean_freq, tcsc, kurt, log_amp, amp_cv
    yield (_previous_psr(x, p),)
    spec = np.abs(np.fft.rfft(x * p.taper, p.nfft))
    cs = np.empty(len(spec) + 1)
    cs[0] = 0.0
    np.cumsum(spec, out=cs[1:])
    total = float(cs[p.band[1]] - cs[p.band[0]]) or 1.0
    i0, i1 = p.search
    k = i0 + int(spec[i0:i1].argmax())
    lo, hi = min(len(spec), math.ceil(0.6 * k)), min(len(spec), math.floor(1.4 * k) + 1)
    conc = float(cs[hi] - cs[lo]) / total
    high = float(cs[p.high[1]] - cs[p.high[0]]) / total
    yield conc, high, k * p.df, _previous_harmonics(spec, k, p.ones)
    f = np.fft.rfft(x, p.nfft2)
    ac = np.fft.irfft(f.real * f.real + f.imag * f.imag, p.nfft2)
    seg = ac[p.lags[0] : p.lags[1]] / ac[0]
    yield float(seg.max()), float(seg.min())


_PREVIOUS_ORDER = (
    ("leakage", "mean_freq_hz", "tcsc", "kurtosis", "log_amplitude", "amplitude_cv"),
    ("psr",),
    ("concentration", "high_freq", "peak_freq_hz", "harmonics"),
    ("acf_max", "acf_min"),
)


def _previous_psr(x: np.ndarray, p: vf_features._Plan) -> float:
    if p.psr_at is not None and p.psr_frac is not None:
        # Drawn at vf_features.PSR_RATE_HZ (a later change, of the definition): the grid is
        # compared on the same points.
        x = x[p.psr_at] + p.psr_frac * (x[p.psr_at + 1] - x[p.psr_at])
    lo, hi = float(np.minimum.reduce(x)), float(np.maximum.reduce(x))
    if hi == lo:
        return FLAT.psr  # once a ZeroDivisionError (a window flat but for its last bits: found by this test)
    scaled = x - lo
    scaled *= PSR_GRID / (hi - lo)
    q = scaled.astype(np.intp)
    np.minimum(q, PSR_GRID - 1, out=q)
    boxes = q[p.delay :] * PSR_GRID
    boxes += q[: -p.delay]
    return float(np.count_nonzero(np.bincount(boxes, minlength=PSR_GRID * PSR_GRID))) / (PSR_GRID * PSR_GRID)


def _previous_harmonics(spec: np.ndarray, k: int, ones: np.ndarray) -> float:
    m = len(spec)

    def band(c: int) -> float:
        part = spec[int(0.85 * c) : min(math.ceil(1.15 * c) + 1, m)]
        return float(part.dot(ones[: len(part)]))

    h3 = band(3 * k) if 3 * k * 1.15 < m else 0.0
    return (band(2 * k) + h3) / (band(k) + 1e-12)


def _previous(x: np.ndarray, fs: float) -> dict[str, float]:
    values = [v for stage in _previous_stages(x, fs) for v in stage]
    if len(values) == len(vf_features.FEATURE_NAMES) and values == [
        getattr(FLAT, name) for name in vf_features.FEATURE_NAMES
    ]:
        return {name: getattr(FLAT, name) for name in vf_features.FEATURE_NAMES}
    names = [name for stage in _PREVIOUS_ORDER for name in stage]
    return dict(zip(names, values, strict=True))


def _current(x: np.ndarray, fs: float) -> dict[str, float]:
    names = [name for stage in vf_features.STAGES for name in stage]
    return dict(zip(names, [v for stage in vf_features.stages(x, fs) for v in stage], strict=True))


def _same_bits(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(np.float64(a[k]).tobytes() == np.float64(b[k]).tobytes() for k in a)


@st.composite
def _windows(draw: st.DrawFn) -> tuple[np.ndarray, float]:
    fs = draw(st.sampled_from([80.0, 83.3, 90.0, 125.0, 160.0]))
    n = window_length(fs, VfParams())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = np.arange(n) / fs
    kind = draw(st.sampled_from(["noise", "sine", "spikes", "levels", "mixed"]))
    amplitude = draw(st.sampled_from([1e-4, 0.05, 1.0, 30.0]))
    if kind == "noise":
        x = rng.normal(size=n)
    elif kind == "sine":
        x = np.sin(2 * np.pi * draw(st.floats(0.5, 30.0)) * t + draw(st.floats(0.0, 6.3)))
    elif kind == "spikes":
        x = np.zeros(n)
        x[rng.integers(0, n, size=draw(st.integers(1, 12)))] = 1.0
    elif kind == "levels":  # few distinct values: ties in the maxima and on the grid's edges
        x = rng.integers(-2, 3, size=n).astype(float)
    else:
        x = np.sin(2 * np.pi * 5 * t) + 0.3 * rng.normal(size=n)
        x[: draw(st.integers(0, n // 2))] = 0.0
    return np.ascontiguousarray(amplitude * x + draw(st.sampled_from([0.0, 0.5, -3.0]))), fs


@settings(max_examples=300, deadline=None)
@given(_windows())
def test_features_equal_their_previous_definitions_bit_for_bit(window: tuple[np.ndarray, float]) -> None:
    x, fs = window
    assert _same_bits(_current(x, fs), _previous(x, fs))


@settings(max_examples=300, deadline=None)
@given(
    window=_windows(),
    zeros=st.lists(st.sampled_from([0.0, -0.0]), min_size=1, max_size=40),
    where=st.integers(0, 2**32 - 1),
    sign=st.sampled_from([1.0, -1.0]),
)
def test_the_grid_equals_its_previous_definition_with_signed_zeros_at_the_extremes(
    window: tuple[np.ndarray, float], zeros: list[float], where: int, sign: float
) -> None:
    # The grid reads its extremes where argmin/argmax find them: with zeros of both signs as the
    # smallest (or largest) values, only the zero's sign could differ from numpy's reductions.
    x, fs = window
    x = sign * np.abs(x - x.min()) if x.max() > x.min() else x.copy()
    spots = np.random.default_rng(where).choice(len(x), size=len(zeros), replace=False)
    x[spots] = zeros
    p = _plan(len(x), fs)
    if x.max() > x.min():
        assert vf_features._psr(x, p) == _previous_psr(x, p)


@settings(max_examples=300, deadline=None)
@given(_windows())
def test_the_fft_kernels_equal_numpy_fft(window: tuple[np.ndarray, float]) -> None:
    x, _ = window
    for n in (512, 1024, len(x) + len(x) % 2):
        f = np.fft.rfft(x, n)
        assert vf_features._rfft(x, n).tobytes() == f.tobytes()
        power = f.real * f.real + f.imag * f.imag
        assert vf_features._irfft(power, n).tobytes() == np.fft.irfft(power, n).tobytes()


@settings(max_examples=40, deadline=None)
@given(
    fs=st.sampled_from([125.0, 250.0, 360.0, 500.0]),
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8),
)
def test_streamed_windows_are_the_filtered_signal_decimated(fs: float, seed: int, sizes: list[int]) -> None:
    # The detector filters in place and shifts its ring in place; each step's window must still be
    # exactly the last samples of the band-passed, decimated signal (as SosFilter.run gives them).
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=int(12 * fs))) * 0.01 + np.sin(np.arange(int(12 * fs)) / fs * 2 * np.pi * 4)
    det = VfDetector(fs)
    det.check_every_step = True
    seen: list[bytes] = []
    original = vf_features.stages

    def spy(w: np.ndarray, fsd: float) -> Iterator[tuple[float, ...]]:
        seen.append(w.tobytes())
        return original(w, fsd)

    k = decimation(fs)
    y = SosFilter.design(feature_sos(fs)).run(x)[::k]
    n, hop = det.window, det.hop
    expected = [y[c - n : c].tobytes() for c in range(hop, len(y) + 1, hop) if c >= n]  # as batch_features
    vf_features.stages = spy
    steps = []
    try:
        i, j = 0, 0
        while i < len(x):
            size = sizes[j % len(sizes)]
            steps += det.feed(x[i : i + size]).steps
            i, j = i + size, j + 1
    finally:
        vf_features.stages = original
    assert seen == expected
    # Each step's recent peak, as it was defined: numpy's largest magnitude over the ring's last hop.
    previous = [float(np.maximum.reduce(np.abs(np.frombuffer(w)[-hop:]))) for w in expected]
    assert [s.recent_peak_mv for s in steps] == previous


@settings(max_examples=500, deadline=None)
@given(
    threshold=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1e-300, 1e-22, 0.2, 0.5, 0.8, 0.95, 1.0])),
    z=st.floats(-80.0, 80.0),
    nudge=st.sampled_from([0.0, 1e-15, -1e-15, 1e-9, -1e-9, -1e-7]),
)
def test_the_exit_limit_only_spares_sigmoid_calls(threshold: float, z: float, nudge: float) -> None:
    # The early exit tests ``bound < exit_limit(t) and sigmoid(bound) < t``; before, only the sigmoid
    # test.  It must never exit where that did not, and miss an exit only within ~1e-9 of the logit.
    limit = exit_limit(threshold)
    values = [z] + ([limit + nudge * (1.0 + abs(limit))] if math.isfinite(limit) else [])
    for value in values:
        before = sigmoid(value) < threshold
        now = value < limit and sigmoid(value) < threshold
        assert before or not now
        if before and math.isfinite(limit) and not now:
            assert value >= limit - 2e-9 * (1.0 + abs(limit))
