"""ECG signal-quality index: is this stretch of ECG fit to derive a heart rate from?

The signal is judged in fixed windows (``window_s``, aligned on the sample index so any block
split gives the same verdicts).  Each window gets one verdict:

* ``FLAT`` — peak-to-peak below ``flat_mv``: lead off on many front-ends, or a dead channel.
* ``SATURATED`` — a large share of samples sits exactly on the window's extreme values: the
  amplifier is pinned at a rail (lead off on others, or a huge offset).
* ``NOISY`` — the band-passed signal is not spiky enough (kurtosis under ``min_kurtosis``; clean
  ECG is dominated by a few sharp QRS and has kurtosis well above 5, Gaussian noise has 3, after
  Li, Clifford et al. 2008), or its amplitude jumps to several times that of recent good
  windows (electrode motion).
* ``GOOD`` otherwise.

Each window also carries its **slope floor**: in each second of the window, the median absolute
slope of the band-passed signal over the window's 99th percentile of it, the largest of those.
Clean ECG is steep only on its QRS complexes, so its median slope is a small fraction of the QRS's
(0.03 in the median window of the 24 MIT-BIH records, 0.14 at the 99th percentile; wide ectopic
beats and big T waves are smooth); Gaussian noise is steep everywhere, ~0.26 (0.674 / 2.576, the
median and 99th percentile of |N(0, 1)|) whatever its spectrum and scale.  Kurtosis is taken over
the whole window, so a burst of muscle or white noise over part of it leaves it above its limit
while the R-peak detector takes the noise's peaks for beats.  The floor is not a verdict of its
own: a slow, wide, small rhythm under amplifier fuzz (an agonal rhythm) has a high floor too and
is still readable; the ECG channel calls a window noisy on it only when the window's beats come
too early to be the patient's (``gateway.signal.ecg_channel``).

Kurtosis under ``min_kurtosis`` lumps together noise and smooth, periodic rhythms: a sinusoid has
1.5, under Gaussian noise's 3, and a regular wide-complex rhythm comes close to one (vfdb 418:
1.55-2.4 in every window).  The index cannot tell them apart, having no beats: a window noisy for
its kurtosis alone (its amplitude did not jump) carries its band-passed samples (``band``), and
the ECG channel reads it when the complexes at the R-peak detector's beats are alike one another.

Downstream, any verdict but ``GOOD`` means "no valid ECG": heart-rate alarms are suppressed and a
technical condition is raised instead, so a loose electrode does not read as asystole.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from gateway.signal.ecg_filters import SosFilter, butter2_bandpass, concatenate, join_samples
from gateway.signal.small_stats import median

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]


_max, _min, _sum = np.maximum.reduce, np.minimum.reduce, np.add.reduce


class EcgQuality(enum.StrEnum):
    GOOD = "good"
    FLAT = "flat"
    SATURATED = "saturated"
    NOISY = "noisy"


@dataclass(frozen=True, slots=True)
class QualityParams:
    window_s: float = 4.0
    flat_mv: float = 0.05
    rail_share: float = 0.05  # share of samples on the window's max or min value
    min_kurtosis: float = 4.0
    max_amplitude_jump: float = 4.0  # band-passed p-p over the median of recent good windows
    slope_parts: int = 4  # the slope floor is taken over each of this many parts (1 s each at 4 s)
    history: int = 8


@dataclass(frozen=True, slots=True)
class QualityWindow:
    start_index: int
    end_index: int  # exclusive
    quality: EcgQuality
    kurtosis: float
    ptp_mv: float
    slope_floor: float = 0.0  # see the module docstring
    # The band-passed samples of a window noisy for its kurtosis alone (its amplitude did not
    # jump), else None: the ECG channel looks in them for a rhythm of alike complexes, which
    # makes a smooth, wide rhythm readable (see the module docstring).
    band: FloatArray | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class QualityState:
    fs: float
    params: QualityParams
    band: SosFilter
    window: int
    window_start: int
    raw: list[FloatArray] = field(default_factory=list)
    filtered: list[FloatArray] = field(default_factory=list)
    filled: int = 0
    good_ptp: tuple[float, ...] = ()


def new_quality_state(fs: float, params: QualityParams | None = None, first_index: int = 0) -> QualityState:
    p = params or QualityParams()
    # 1-40 Hz: removes wander (which the detector copes with) but keeps muscle noise visible.
    sos = butter2_bandpass(1.0, min(40.0, 0.45 * fs), fs)
    return QualityState(
        fs=fs,
        params=p,
        band=SosFilter.design(sos),
        window=max(1, round(p.window_s * fs)),
        window_start=first_index,
    )


def restart(state: QualityState, first_index: int) -> None:
    state.band.reset()
    state.raw.clear()
    state.filtered.clear()
    state.filled = 0
    state.window_start = first_index


def feed(state: QualityState, samples_mv: FloatArray) -> list[QualityWindow]:
    """Add contiguous samples; returns the verdicts of the windows they complete."""
    out: list[QualityWindow] = []
    if len(samples_mv) == 0:
        return out
    filt = state.band.run(samples_mv)
    pos = 0
    while pos < len(samples_mv):
        take = min(state.window - state.filled, len(samples_mv) - pos)
        state.raw.append(samples_mv[pos : pos + take])
        state.filtered.append(filt[pos : pos + take])
        state.filled += take
        pos += take
        if state.filled == state.window:
            # The filtered parts are float64 (``SosFilter.run``), the raw ones as given.
            out.append(_judge(state, concatenate(state.raw), join_samples(state.filtered)))
            state.window_start += state.window
            state.raw.clear()
            state.filtered.clear()
            state.filled = 0
    return out


def _judge(state: QualityState, raw: FloatArray, filt: FloatArray) -> QualityWindow:
    p = state.params
    # The ufuncs' reductions called directly: what ndarray.max/min/sum call, without their
    # Python-level wrappers (~2k instructions a call).
    hi, lo = float(_max(raw)), float(_min(raw))
    ptp = hi - lo
    # Means as sum / n: what ndarray.mean computes (the same pairwise sum, divided by the count),
    # without its Python-level wrapper.
    n = len(filt)
    centred = filt - _sum(filt) / n
    squares = centred * centred
    var = float(_sum(squares) / n)
    # The fourth power as squared squares: numpy would call pow() per sample for ``**4``.
    # var * var, not var**2: a float's ** raises OverflowError where * gives inf.
    kurt = float(_sum(squares * squares) / n / (var * var)) if var * var > 0.0 else 0.0
    on_rails = int(np.count_nonzero(raw == hi)) + int(np.count_nonzero(raw == lo))
    band_ptp = float(_max(filt) - _min(filt))
    smooth: FloatArray | None = None

    if ptp < p.flat_mv:
        quality = EcgQuality.FLAT
    elif on_rails >= p.rail_share * len(raw):
        quality = EcgQuality.SATURATED
    elif len(state.good_ptp) >= 3 and band_ptp > p.max_amplitude_jump * median(state.good_ptp):
        quality = EcgQuality.NOISY
    elif kurt < p.min_kurtosis:
        quality = EcgQuality.NOISY
        smooth = filt
    else:
        quality = EcgQuality.GOOD
        state.good_ptp = (*state.good_ptp[-(p.history - 1) :], band_ptp)
    return QualityWindow(
        start_index=state.window_start,
        end_index=state.window_start + len(raw),
        quality=quality,
        kurtosis=kurt,
        ptp_mv=ptp,
        slope_floor=slope_floor(filt, p.slope_parts),
        band=smooth,
    )


def slope_floor(filt: FloatArray, parts: int) -> float:
    """The largest of the ``parts`` sub-windows' median absolute slope, over the whole window's
    99th percentile of it: near 0 for a spiky QRS train, ~0.26 for Gaussian noise."""
    filt = np.asarray(filt)
    slope = filt[1:] - filt[:-1]  # np.diff, without its wrapper
    np.abs(slope, slope)
    size = len(slope) // parts
    if size < 2:
        return 0.0
    # Selections (ndarray.partition), not np.percentile/np.median, and in place on our own array:
    # a selection only reorders, so the sub-windows' medians are taken first, and the whole
    # slope's 99th percentile after, from the same values in another order.
    pieces = slope[: size * parts].reshape(parts, size)
    mid = size // 2
    pieces.partition(mid, axis=1)
    floor = float(_max(pieces[:, mid]))
    k = min(len(slope) - 1, int(0.99 * len(slope)))
    slope.partition(k)
    top = float(slope[k])
    if top <= 0.0:
        return 0.0
    return floor / top
