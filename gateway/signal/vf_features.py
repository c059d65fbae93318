"""Features that tell ventricular fibrillation/flutter from organised rhythm and from noise.

Computed on one window (a few seconds) of band-passed ECG, in physical units, so the same
classifier serves any sample rate.  Each is an established VF measure (see Amann, Tratnig & Unterkofler,
"Reliability of old and new ventricular fibrillation detection algorithms for automated external
defibrillators", BioMed Eng OnLine 4:60, 2005, for their definitions and a comparison):

* ``leakage`` — VF-filter leakage (Kuo & Dillman 1978): a narrow band-stop at the window's mean
  frequency passes little of a near-sinusoidal VF and much of a spiky QRS train.
* ``mean_freq_hz`` — the mean frequency that filter is tuned to (pi * sum|x| / sum|dx| half-periods).
* ``tcsc`` — threshold-crossing sample count (Arafat, Chowdhury & Hasan 2011): the share of samples
  above 0.2 of the local maximum: high for VF, low for a QRS train with flat diastole between beats.
* ``concentration`` — spectral concentration around the dominant 1-10 Hz peak (after Barro et al. 1989):
  share of amplitude within 0.6-1.4 x the peak frequency.
* ``high_freq`` — share of spectral amplitude above 12 Hz: sharp QRS complexes and muscle noise,
  not VF (Barro's A3-like term).
* ``peak_freq_hz`` — that dominant frequency.
* ``kurtosis`` — of the window (VF ~ 2-3, sinus rhythm well above 5).
* ``log_amplitude`` — log10 of the RMS amplitude (mV).
* ``amplitude_cv`` — variation of the amplitude between sub-windows: VF is roughly stationary over
  seconds, electrode-motion artefact comes in bursts.
* ``acf_max`` / ``acf_min`` — the highest and lowest normalised autocorrelation at lags of
  0.15-1.5 s: how strictly the signal repeats itself (an organised rhythm, VT) and how
  sinusoidal it is (a deep trough half a cycle on).
* ``psr`` — phase-space reconstruction (Amann, Tratnig & Unterkofler, "Detecting ventricular
  fibrillation by time-delay methods", IEEE TBME 54(1), 2007): the share of a 40 x 40 grid that the
  curve (x(t), x(t - 0.5 s)) visits; a QRS train with flat diastole stays in few boxes.  The
  boxes a curve visits grow with the points drawn on it, so it is drawn at one rate,
  ``PSR_RATE_HZ`` (Amann et al. fix theirs too, at 50 Hz): the rate the model's VF was learnt
  at.  Taken at the features' own rate instead, a 130 Hz strap's sinus rhythm read 0.134
  against 0.106 at 83 Hz (vfdb, 8 records), about +2.6 in the model's log-odds, and raised
  false VF alarms (``bench/ecg_vf.py --fs 130``).
* ``harmonics`` — spectral amplitude around 2 and 3 times the dominant frequency over the amplitude
  around it: VF and flutter are near-sinusoidal, wide ventricular complexes are not.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

FEATURE_NAMES = (
    "leakage",
    "mean_freq_hz",
    "tcsc",
    "concentration",
    "high_freq",
    "peak_freq_hz",
    "kurtosis",
    "log_amplitude",
    "amplitude_cv",
    "acf_max",
    "acf_min",
    "psr",
    "harmonics",
)


@dataclass(frozen=True, slots=True)
class VfFeatures:
    leakage: float
    mean_freq_hz: float
    tcsc: float
    concentration: float
    high_freq: float
    peak_freq_hz: float
    kurtosis: float
    log_amplitude: float
    amplitude_cv: float
    acf_max: float
    acf_min: float
    psr: float
    harmonics: float

    def as_array(self) -> FloatArray:
        # Field by field: dataclasses.astuple deep-copies and costs more than the features.
        return np.array(
            [
                self.leakage,
                self.mean_freq_hz,
                self.tcsc,
                self.concentration,
                self.high_freq,
                self.peak_freq_hz,
                self.kurtosis,
                self.log_amplitude,
                self.amplitude_cv,
                self.acf_max,
                self.acf_min,
                self.psr,
                self.harmonics,
            ]
        )


TCSC_LEVEL = 0.2  # share of the local maximum a sample must exceed to count (Arafat et al.)
SUB_WINDOW_S = 1.0  # local maximum and amplitude are taken per second
# As a 0-d array: a Python float operand costs ~1.5k instructions more a ufunc call.
_TCSC_LEVEL = np.array(TCSC_LEVEL)
PSR_GRID = 40  # boxes per axis of the phase-space grid (Amann et al. 2007)
PSR_DELAY_S = 0.5
# vfdb's 250 Hz decimated by 3 (``vf_detector.decimation``): the rate of the training's VF.
PSR_RATE_HZ = 250.0 / 3.0
ACF_LAGS_S = (0.15, 1.5)
FLAT = VfFeatures(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, -6.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What depends only on the window length and rate, computed once (this runs every second)."""

    taper: FloatArray  # Hann window
    nfft: int
    df: float
    band: tuple[int, int]  # FFT bins 0.5-30 Hz (inclusive start, exclusive end)
    search: tuple[int, int]  # 1-10 Hz: where the dominant frequency is looked for
    high: tuple[int, int]  # 12-30 Hz
    sub: int  # samples per sub-window
    subs: int
    nfft2: int  # FFT length of the autocorrelation: long enough for it to be linear at the lags searched
    lags: tuple[int, int]  # autocorrelation lags searched
    delay: int  # phase-space delay in points of the curve
    # The curve's points at ``PSR_RATE_HZ`` by linear interpolation: sample ``psr_at[i]`` and the
    # next, ``psr_next[i]``, weighted ``1 - psr_frac[i]`` and ``psr_frac[i]``; None at that rate
    # (the samples themselves).
    psr_at: npt.NDArray[np.intp] | None
    psr_next: npt.NDArray[np.intp] | None
    psr_frac: FloatArray | None
    ones: FloatArray  # for sums as dot products
    ones_n: FloatArray  # its first n and n - 1 values (views made once)
    ones_n1: FloatArray


@cache
def _plan(n: int, fs: float) -> _Plan:
    nfft = 1 << int(np.ceil(np.log2(n)))
    df = fs / nfft
    last = nfft // 2 + 1

    def bins(lo: float, hi: float) -> tuple[int, int]:
        return min(last, int(np.ceil(lo / df))), min(last, int(np.floor(hi / df)) + 1)

    sub = max(1, int(SUB_WINDOW_S * fs))
    lags = (max(1, int(ACF_LAGS_S[0] * fs)), min(n, int(ACF_LAGS_S[1] * fs)))
    # A circular autocorrelation over nfft points equals the linear one at lags up to nfft - n: the
    # spectrum's FFT length serves when it leaves room for the longest lag (it does at 80-90 Hz).
    nfft2 = nfft if nfft - n >= lags[1] else 1 << int(np.ceil(np.log2(2 * n)))
    ones = np.ones(max(n, nfft // 2 + 1))
    psr_at: npt.NDArray[np.intp] | None = None
    psr_next: npt.NDArray[np.intp] | None = None
    psr_frac: FloatArray | None = None
    psr_fs = fs
    if abs(fs - PSR_RATE_HZ) > 1e-9 * PSR_RATE_HZ:
        psr_fs = PSR_RATE_HZ
        pos = np.arange(0.0, n - 1, fs / PSR_RATE_HZ)  # within the samples: each point has a next one
        psr_at = pos.astype(np.intp)
        psr_next = psr_at + 1
        psr_frac = pos - psr_at
    return _Plan(
        np.hanning(n),
        nfft,
        df,
        bins(0.5, 30.0),
        bins(1.0, 10.0),
        bins(12.0 + 1e-9, 30.0),
        sub,
        n // sub,
        nfft2,
        lags,
        max(1, round(PSR_DELAY_S * psr_fs)),
        psr_at,
        psr_next,
        psr_frac,
        ones,
        ones[:n],
        ones[: n - 1],
    )


# The features in the order they are computed, stage by stage: the cheap time-domain ones, the
# phase-space grid, those of the spectrum (one FFT), and the autocorrelation (two more FFTs: the
# costliest).  A caller that can decide from the first stages (the detector's exact early exit) stops
# there.  The grid comes before the spectrum: with the shipped model, the spectrum can then be
# skipped about as often as the grid could be after it (mitdb), and it costs about twice as much.
# The spectrum's features come in three stages: the dominant frequency (its argmax), then the two
# shares (one cumulative sum), then the harmonics (three more sums).  With the shipped model the
# dominant frequency is the spectrum's only term that can raise the score, so a step is often
# decided on it, or on the shares, before the rest is computed.
STAGES: tuple[tuple[str, ...], ...] = (
    ("leakage", "mean_freq_hz", "tcsc", "kurtosis", "log_amplitude", "amplitude_cv"),
    ("psr",),
    ("peak_freq_hz",),
    ("high_freq", "concentration"),
    ("harmonics",),
    ("acf_max", "acf_min"),
)
_FLAT_STAGES = tuple(tuple(getattr(FLAT, name) for name in stage) for stage in STAGES)
# Above this log10 RMS (mV) squares and spectra may overflow, and ``bounds`` no longer holds.
MAX_LOG_AMPLITUDE = 50.0


def compute(x: FloatArray, fs: float) -> VfFeatures:
    """Features of one window ``x`` (band-passed ECG in mV, at ``fs`` Hz; at least 2 s long)."""
    values = [v for stage in stages(x, fs) for v in stage]
    names = (name for stage in STAGES for name in stage)
    return VfFeatures(**dict(zip(names, values, strict=True)))


def stages(x: FloatArray, fs: float) -> Iterator[tuple[float, ...]]:
    """The features of one window, one tuple per entry of ``STAGES`` (same names, same order).

    Nothing of a stage is computed before the caller asks for it, so a caller that has seen enough
    closes the generator and the costlier stages are never run."""
    n = len(x)
    if n < 2 * fs:
        raise ValueError(f"window of {n} samples is shorter than 2 s at {fs} Hz")
    p = _plan(n, fs)
    # Sums are dot products with ones: a ufunc reduction sets up an iterator that costs ~15k
    # instructions, several times the sum of a few hundred numbers (this runs every second per
    # channel).  They differ from numpy's pairwise sums in the last bits only.
    ones = p.ones
    x = x - x.dot(p.ones_n) / n
    ax = np.abs(x)
    sum_ax = float(ax.dot(p.ones_n))
    dx = x[1:] - x[:-1]  # np.diff, without its wrapper
    sum_dx = float(np.abs(dx, out=dx).dot(p.ones_n1))
    var = float(x.dot(x)) / n
    # A flat window: a flat line, or one flat in all but its last bits (a band-passed flat line
    # decays into subnormals whose squares are 0 while their sums are not: the kurtosis below
    # divided by 0), or NaN from an impossible input.  A variance whose square is positive means
    # some sample is not 0, so the mass ``sum_ax`` is positive too.
    if sum_dx <= 0.0 or not var * var > 0.0:
        yield from _FLAT_STAGES
        return

    # VF filter: half-period N from the ratio of the signal's mass to its slope's mass.
    ratio = np.pi * sum_ax / sum_dx
    half = max(1, min(n // 2, int(ratio + 0.5)))
    leak = x[half:] + x[:-half]
    leak_num = float(np.abs(leak, out=leak).dot(ones[: n - half]))
    ones_half = ones[:half]
    leakage = leak_num / (2.0 * sum_ax - float(ax[:half].dot(ones_half)) - float(ax[-half:].dot(ones_half)))
    mean_freq = fs / (2.0 * ratio)

    # Per-second local maximum: threshold-crossing share, and how steady the amplitude is.
    blocks = (ax if p.subs * p.sub == n else ax[: p.subs * p.sub]).reshape(p.subs, p.sub)
    local_max = np.maximum.reduce(blocks, axis=1)
    tcsc = float(np.count_nonzero(blocks > _TCSC_LEVEL * local_max[:, None])) / blocks.size
    lms = local_max.tolist()  # a handful of numbers: plain Python is cheaper than numpy here
    lm_mean = sum(lms) / p.subs
    amp_cv = math.sqrt(sum([(v - lm_mean) ** 2 for v in lms]) / p.subs) / lm_mean if lm_mean > 0 else 0.0

    x2 = x * x
    kurt = float(x2.dot(x2)) / n / (var * var)
    log_amp = float(np.log10(max(math.sqrt(var), 1e-6)))
    yield leakage, mean_freq, tcsc, kurt, log_amp, amp_cv
    yield (_psr(x, p),)

    spec = np.abs(_rfft(x * p.taper, p.nfft))
    i0, i1 = p.search
    k = i0 + int(spec[i0:i1].argmax())
    yield (k * p.df,)

    cs = np.empty(len(spec) + 1)
    cs[0] = 0.0
    np.cumsum(spec, out=cs[1:])
    total = float(cs[p.band[1]] - cs[p.band[0]]) or 1.0
    lo, hi = min(len(spec), math.ceil(0.6 * k)), min(len(spec), math.floor(1.4 * k) + 1)
    yield float(cs[p.high[1]] - cs[p.high[0]]) / total, float(cs[hi] - cs[lo]) / total
    yield (_harmonics(spec, k, p.ones),)
    yield _autocorrelation(x, p)


def bounds(n: int, fs: float) -> tuple[FloatArray, FloatArray]:
    """The lowest and highest value each feature (``FEATURE_NAMES`` order) can take on a window of
    ``n`` samples at ``fs`` Hz whose log10 RMS is at most ``MAX_LOG_AMPLITUDE``: what follows from each
    definition, widened for rounding; infinite where the definition gives no bound.

    * shares (leakage: |x(t) + x(t - N)| <= |x(t)| + |x(t - N)|; tcsc; concentration and
      high_freq, whose bins lie inside the 0.5-30 Hz total) are in [0, 1];
    * mean_freq_hz: sum |dx| <= 2 sum |x|, so the half-period ratio is >= pi / 2;
    * peak_freq_hz: a bin of the 1-10 Hz search band;
    * kurtosis n sum x^4 / (sum x^2)^2 is in [1, n] (0 for a flat window);
    * amplitude_cv: the coefficient of variation of m non-negative numbers is <= sqrt(m - 1);
    * acf_max/acf_min: a normalised autocorrelation is in [-1, 1] (Cauchy-Schwarz);
    * psr: no more boxes than points on the curve, its length less the delay;
    * harmonics: a ratio of amplitudes, >= 0;
    * and the values of a flat window (``FLAT``).
    """
    p = _plan(n, fs)
    inf = np.inf
    band_holds = (
        int(np.ceil(0.6 * p.search[0])) >= p.band[0] and int(np.floor(1.4 * (p.search[1] - 1))) + 1 <= p.band[1]
    )
    ranges = {
        "leakage": (0.0, 1.0),
        "mean_freq_hz": (0.0, fs / np.pi),
        "tcsc": (0.0, 1.0),
        "concentration": (0.0, 1.0 if band_holds else inf),
        "high_freq": (0.0, 1.0 if p.band[0] <= p.high[0] and p.high[1] <= p.band[1] else inf),
        "peak_freq_hz": (p.search[0] * p.df, (p.search[1] - 1) * p.df),
        "kurtosis": (0.0, float(n)),
        "log_amplitude": (-6.0, MAX_LOG_AMPLITUDE),
        "amplitude_cv": (0.0, float(np.sqrt(max(p.subs - 1, 0)))),
        "acf_max": (-1.0, 1.0),
        "acf_min": (-1.0, 1.0),
        "psr": (0.0, min(1.0, ((n if p.psr_at is None else len(p.psr_at)) - p.delay) / (PSR_GRID * PSR_GRID))),
        "harmonics": (0.0, inf),
    }
    flat = FLAT.as_array()  # a flat window gets these values, whatever the definitions say
    lo = np.minimum([ranges[name][0] for name in FEATURE_NAMES], flat)
    hi = np.maximum([ranges[name][1] for name in FEATURE_NAMES], flat)
    slack = 1e-9 * (1.0 + np.abs(np.where(np.isfinite(lo), lo, 0.0)))
    return lo - slack, hi + 1e-9 * (1.0 + np.abs(np.where(np.isfinite(hi), hi, 0.0)))


def _numpy_rfft(x: FloatArray, n: int) -> npt.NDArray[np.complex128]:
    return np.fft.rfft(x, n)


def _numpy_irfft(f: FloatArray, n: int) -> FloatArray:
    return np.fft.irfft(f, n)


def _fft_kernels() -> tuple[
    Callable[[FloatArray, int], npt.NDArray[np.complex128]], Callable[[FloatArray, int], FloatArray]
]:
    """numpy's FFT kernels called as ``np.fft.rfft`` / ``irfft`` call them, without their Python
    wrappers (argument checks, dtype and axis handling: ~20k instructions a call, about as much as
    the transform of a window).  Same kernels, same arguments: the same numbers, bit for bit.  If
    the private module ever changes, the public functions are used."""
    try:
        pfu = importlib.import_module("numpy.fft._pocketfft_umath")
        forward, inverse = pfu.rfft_n_even, pfu.irfft
        probe = np.arange(6.0)
        spectrum = np.fft.rfft(probe, 8)
        same = np.array_equal(forward(probe, 1, out=np.empty(5, np.complex128)), spectrum) and np.array_equal(
            inverse(spectrum, 1 / 8, out=np.empty(8)), np.fft.irfft(spectrum, 8)
        )
    except (ImportError, AttributeError, TypeError, ValueError):
        same = False
    if not same:
        return _numpy_rfft, _numpy_irfft

    def rfft(x: FloatArray, n: int) -> npt.NDArray[np.complex128]:
        if n % 2 or len(x) > n:  # the public function's cropping and odd lengths: left to it
            return np.fft.rfft(x, n)
        out: npt.NDArray[np.complex128] = forward(x, 1, out=np.empty(n // 2 + 1, np.complex128))
        return out

    def irfft(f: FloatArray, n: int) -> FloatArray:
        if len(f) != n // 2 + 1:
            return np.fft.irfft(f, n)
        # np.fft.irfft's "backward" normalisation: 1/n, as a float64 (numpy.reciprocal(n, dtype=float64)).
        out: FloatArray = inverse(f, 1 / n, out=np.empty(n))
        return out

    return rfft, irfft


_rfft, _irfft = _fft_kernels()


def _autocorrelation(x: FloatArray, p: _Plan) -> tuple[float, float]:
    f = _rfft(x, p.nfft2)
    ac = _irfft(f.real * f.real + f.imag * f.imag, p.nfft2)
    seg = ac[p.lags[0] : p.lags[1]] / ac[0]
    return float(seg.max()), float(seg.min())


_PSR_LAST = np.array(PSR_GRID - 1, dtype=np.intp)
_PSR_ROW = np.array(PSR_GRID, dtype=np.intp)


def _psr(x: FloatArray, p: _Plan) -> float:
    if p.psr_at is not None and p.psr_next is not None and p.psr_frac is not None:
        # In place on the gathered copies (~3.7 us; the expression in one line ~5.4 us).
        base = x[p.psr_at]
        x = x[p.psr_next]
        x -= base
        x *= p.psr_frac
        x += base
    # The extremes read where argmin/argmax find them: the same values as np.minimum/maximum.reduce
    # (~5k instructions less each); only a zero's sign could differ, which changes no box.
    lo, hi = float(x[x.argmin()]), float(x[x.argmax()])
    if not hi > lo:
        # Flat once drawn at the PSR rate (a window flat but for its last bits, which the
        # interpolation rounds away): a flat window's value, not a division by zero.
        return FLAT.psr
    scaled = x - lo
    scaled *= PSR_GRID / (hi - lo)
    q = scaled.astype(np.intp)
    # The integer constants as 0-d intp arrays: a Python int operand costs ~2k instructions more a
    # ufunc call (its dtype is worked out from its value); the same integers, the same results.
    np.minimum(q, _PSR_LAST, out=q)
    boxes = q[p.delay :] * _PSR_ROW
    boxes += q[: -p.delay]
    # Boxes visited, marked in a byte grid: cheaper than counting the visits (np.bincount) first.
    grid = np.zeros(PSR_GRID * PSR_GRID, dtype=np.uint8)
    grid[boxes] = 1
    return float(np.count_nonzero(grid)) / (PSR_GRID * PSR_GRID)


def _harmonics(spec: FloatArray, k: int, ones: FloatArray) -> float:
    """Amplitude within 0.85-1.15 x 2 and 3 times the dominant bin ``k``, over that around ``k``."""
    m = len(spec)

    def band(c: int) -> float:
        part = spec[int(0.85 * c) : min(math.ceil(1.15 * c) + 1, m)]
        return float(part.dot(ones[: len(part)]))

    h3 = band(3 * k) if 3 * k * 1.15 < m else 0.0
    return (band(2 * k) + h3) / (band(k) + 1e-12)
