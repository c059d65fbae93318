"""The patient's own QRS marching through a rhythmic artefact: tremor, tooth brushing, shivering.

A rhythmic artefact of 3-8 Hz as large as the QRS (a limb's tremor on an electrode, a toothbrush)
looks like ventricular flutter or tachycardia to any detector of the waveform's shape, and it is
a known cause of false VT/VF alarms (Knight et al., "Clinical consequences of electrocardiographic
artifact mimicking ventricular tachycardia", N Engl J Med 1999;341:1270-1274).  What gives it away
is what a reader of the strip looks for: the narrow QRS complexes of the underlying rhythm going
on through it, at their own rate.

Here, over the last ``span_s`` (5 s) before a decision: the ECG band-passed above the artefact
(``band_hz``, 15-45 Hz: a QRS has most of its slope there, a tremor little), its peaks (at least
``min_gap_s`` apart, above ``height`` of the band's 99.5th percentile) taken as the native
beats; they are a rhythm of their own when there are at least three, coming regularly (RR spread
within ``spread`` of the median, as the organised-rhythm veto asks; or the sums of consecutive
pairs of RR that regular: a bigeminy) at ``min_rate``-``max_rate`` /min, while the signal's
dominant cycle (autocorrelation peak, 1-30 Hz, lags of 0.15-1.5 s) is at another rate: neither
their mean rate nor twice or half it, within ``apart`` of it.  In VF the band holds no regular
peaks; in VT and flutter its peaks are the ventricular complexes, at the dominant rate.

The last 12 s of samples are kept in a ring, addressed by sample index, and each question
filters a fixed stretch from rest, so the answer does not depend on how the samples were packed.
Asked only where a VF step would be VF-like or a VT run would start, not every second
(``bench/ecg_artefact.py`` measures what it catches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from gateway.signal.ecg_filters import butter2_bandpass, filter_once

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class NativeRhythmSettings:
    span_s: float = 5.0  # the stretch judged, before the decision
    settle_s: float = 3.0  # filtered before it and dropped: the filter's start from rest
    band_hz: tuple[float, float] = (15.0, 45.0)
    height: float = 0.35  # of the band's 99.5th percentile of |x|
    min_gap_s: float = 0.25
    spread: float = 0.25
    min_rate: float = 30.0
    max_rate: float = 150.0
    apart: float = 0.2  # the dominant cycle's rate differs from the beats' (and twice it) by this share
    spike_share: float = 0.75  # of a beat's slope energy within 10 ms: a pacing spike (``pacing_spikes``)


class NativeRhythm:
    """A ring of recent samples and the question "does a native rhythm go on through them?"."""

    def __init__(self, fs: float, settings: NativeRhythmSettings | None = None, first_index: int = 0) -> None:
        self.fs = fs
        self.settings = s = settings or NativeRhythmSettings()
        self._need = round((s.span_s + s.settle_s) * fs)
        # Room for the stretch asked about plus the samples fed after it (a block, or the
        # samples queued to a decision point: about a second), with a margin.
        self._ring = np.zeros(self._need + round(4.0 * fs))
        self._end = first_index  # index after the newest sample
        self._count = 0  # samples held
        hi = min(s.band_hz[1], 0.45 * fs)
        self._sos = butter2_bandpass(s.band_hz[0], hi, fs) if hi > s.band_hz[0] else None
        self._lf_sos = butter2_bandpass(1.0, min(30.0, 0.45 * fs), fs)

    def feed(self, samples_mv: FloatArray) -> None:
        # Sample i lives at i % len(ring): a write of the new samples, never a shift of the ring
        # (this runs for every piece of every channel; the question is asked seldom).
        ring, m = self._ring, len(samples_mv)
        size = len(ring)
        if m > size:  # only the newest fit
            self._end += m - size
            samples_mv, m = samples_mv[m - size :], size
        at = self._end % size
        first = min(m, size - at)
        ring[at : at + first] = samples_mv[:first]
        ring[: m - first] = samples_mv[first:]
        self._end += m
        self._count = min(size, self._count + m)

    def sample(self, index: int) -> float | None:
        """The sample fed at ``index``; None when it is not held (not fed yet, or too old)."""
        if not self._end - self._count <= index < self._end:
            return None
        return float(self._ring[index % len(self._ring)])

    def through_artefact(self, end_index: int) -> bool:
        """Whether the samples up to ``end_index`` (exclusive) show a native rhythm of its own
        beside a different dominant cycle (module docstring); False when they are not all here."""
        if self._sos is None:
            return False
        back = self._end - end_index  # samples fed after the stretch
        if back < 0 or back + self._need > self._count:
            return False
        size = len(self._ring)
        start = (end_index - self._need) % size
        x = np.roll(self._ring, -start)[: self._need]
        return native_beside_cycle(x, self.fs, self._sos, self._lf_sos, self.settings)


def native_beside_cycle(x: FloatArray, fs: float, sos: FloatArray, lf_sos: FloatArray, s: NativeRhythmSettings) -> bool:
    n = round(s.span_s * fs)
    hf = filter_once(sos, x)[-n:]
    band = np.abs(hf)
    beats = peaks(band, s.height * upper(band, 0.995), round(s.min_gap_s * fs))
    if len(beats) < 3:
        return False
    if pacing_spikes(x[len(x) - n :], beats, fs, s.spike_share):
        return False
    gaps = [b - a for a, b in pairwise(beats)]
    rr = sorted(gaps)
    k = len(rr) // 2
    mid = rr[k] if len(rr) % 2 else (rr[k - 1] + rr[k]) / 2
    rate = 60.0 * fs / mid
    if not s.min_rate <= rate <= s.max_rate:
        return False
    # Regular, or regular in pairs: a bigeminy (a sinus beat and an ectopic one, short and long
    # intervals in turn) is a rhythm of the patient's too.
    pairs = sorted(a + b for a, b in pairwise(gaps))
    if rr[-1] - rr[0] > s.spread * mid and not (
        len(pairs) >= 2 and pairs[-1] - pairs[0] <= s.spread * pairs[len(pairs) // 2] / 2
    ):
        return False
    # The beats' mean rate (a bigeminy's median interval is its short one).
    mean_rate = 60.0 * fs * len(gaps) / (beats[-1] - beats[0])
    cycle = dominant_rate(filter_once(lf_sos, x)[-n:], fs)
    # Half the rate too: in a VT with alternating complexes the autocorrelation may peak at two
    # cycles, while the band's peaks find every complex.
    return all(abs(cycle - r) > s.apart * r for r in (0.5 * mean_rate, mean_rate, 2.0 * mean_rate))


def pacing_spikes(x: FloatArray, beats: list[int], fs: float, share: float) -> bool:
    """Whether most of the band's beats are pacing spikes, not QRS complexes: within 40 ms of
    each, ``share`` or more of the raw signal's squared first differences falls within 10 ms (3
    differences at least: a spike of a sample or two; a QRS spreads its slope over tens of
    milliseconds).  A
    pacemaker that goes on pacing through VF it does not sense is a regular rhythm at its own
    rate too, and it must not make the VF an "artefact"."""
    half = max(2, round(0.04 * fs))
    k = max(3, round(0.01 * fs))  # consecutive differences: a spike's up and down steps
    spikes = 0
    for b in beats:
        d = np.diff(x[max(0, b - half) : b + half + 1])
        e = d * d
        total = float(np.sum(e))
        if len(e) > k and total > 0.0:
            c = np.cumsum(e)
            if float(np.max(c[k:] - c[:-k])) >= share * total:
                spikes += 1
    return 2 * spikes > len(beats)


def upper(x: FloatArray, q: float) -> float:
    """The ``q`` quantile of ``x`` (the lower of the two around it): np.percentile's own
    partition, without the import of numpy.ma that np.percentile brings to the ECG path."""
    k = min(len(x) - 1, int(q * (len(x) - 1)))
    return float(np.partition(x, k)[k])


def peaks(x: FloatArray, height: float, min_gap: int) -> list[int]:
    """Indices of local maxima of ``x`` at or above ``height``, tallest first kept when two are
    closer than ``min_gap`` samples; in index order."""
    if len(x) < 3 or not height > 0.0:
        return []
    mid = x[1:-1]
    cand = np.flatnonzero((mid >= x[:-2]) & (mid > x[2:]) & (mid >= height)) + 1
    kept: list[int] = []
    for i in sorted(cand.tolist(), key=lambda j: -x[j]):
        if all(abs(i - j) >= min_gap for j in kept):
            kept.append(i)
    return sorted(kept)


def dominant_rate(y: FloatArray, fs: float) -> float:
    """Cycles per minute of ``y``'s strongest autocorrelation peak at a lag of 0.15-1.5 s."""
    w = y - float(np.mean(y))
    lo, hi = round(0.15 * fs), round(1.5 * fs)
    if len(w) <= hi:
        return math.nan
    spec = np.fft.rfft(w, 2 * len(w))
    ac = np.fft.irfft(spec * np.conj(spec), 2 * len(w))[: len(w)]
    return 60.0 * fs / (lo + int(np.argmax(ac[lo:hi])))
