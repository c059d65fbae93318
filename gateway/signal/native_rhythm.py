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

A large artefact puts peaks of its own in the band (its harmonics, its steepest edges), and then
the band's peaks are no regular rhythm even with the QRS among them.  So the channel hands over
the beats it released from good windows (``learn``), and every ``learn_every_s`` the median of
the band around the last ``learn_beats`` of them becomes the patient's QRS template.  Through an
artefact, the band's peaks that correlate with it at ``match_corr`` (``matched_beats``) are a
native rhythm when at least ``min_matched`` of them, spread over ``matched_span`` of the
stretch, come at whole multiples of one RR (``rate_with_dropouts``: the artefact hides some
beats from the match, up to ``max_dropout`` in a row), with the dominant cycle elsewhere as
above.  In vfdb's VF too few complexes match to make a rhythm (``bench/ecg_vf.py`` is unchanged).

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
from gateway.signal.small_stats import median, median_rows

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
    # The patient's own QRS in the band, learnt from beats the channel released (``learn``), and
    # matched through an artefact (``matched_beats``).
    match_corr: float = 0.85  # correlation with the template of a band peak taken as a native beat
    match_height: float = 0.2  # of the band's 99.5th percentile: the candidates matched
    match_half_s: float = 0.05  # the template: this either side of the band's peak at a beat
    learn_beats: int = 5  # released beats a template is made of (their median)
    learn_every_s: float = 30.0  # the QRS changes slowly; each learning costs ~0.2 ms
    dropout_tol: float = 0.15  # matched beats' RRs within this share of a whole number of the base RR
    max_dropout: int = 2  # beats in a row the artefact may hide from the match
    min_matched: int = 4
    matched_span: float = 0.4  # of ``span_s``, from the first matched beat to the last
    rr_match: float = 0.2  # their base RR within this share of the RR the template was learnt at


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
        self.template: FloatArray | None = None  # the patient's QRS in the band (``learn``)
        self.template_rr = 0.0  # samples: the median RR of the beats it was learnt from
        self._released: list[int] = []  # the last beats the channel released, not yet learnt from
        self._learnt_at = -(10**18)  # index of the last beat the template was made with

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

    def samples(self, first: int, last: int) -> FloatArray | None:
        """A copy of the samples of indices ``first`` to ``last`` (exclusive); None when not all held."""
        if first >= last or first < self._end - self._count or last > self._end:
            return None
        return np.array(self._stretch(first, last))

    def learn(self, beats: list[int]) -> None:
        """Beats the channel released from a good window (the patient's own QRS complexes): every
        ``learn_every_s`` the template becomes the median of the last ``learn_beats`` of them in
        the band, each taken around the band's peak at it and turned to a positive peak."""
        s = self.settings
        released = [*self._released, *beats][-s.learn_beats :]
        self._released = released
        if self._sos is None or len(released) < s.learn_beats:
            return
        if released[-1] - self._learnt_at < s.learn_every_s * self.fs:
            return
        half, reach = round(s.match_half_s * self.fs), round(0.05 * self.fs)
        settle = round(0.2 * self.fs)  # the 15-45 Hz filter settles within ~0.1 s
        first, last = released[0] - reach - half - settle, released[-1] + reach + half + 1
        if first < self._end - self._count or last > self._end:
            return  # not all here (a gap, or not yet fed)
        hf = filter_once(self._sos, self._stretch(first, last))
        segments = [segment for b in released if (segment := _complex(hf, b - first, reach, half)) is not None]
        if len(segments) == len(released):
            self.template = median_rows(segments)
            self.template_rr = float(median(b - a for a, b in pairwise(released)))
            self._learnt_at = released[-1]
            self._released = []

    def _stretch(self, first: int, last: int) -> FloatArray:
        """The samples of indices ``first`` to ``last`` (exclusive), held in the ring."""
        size = len(self._ring)
        a, b = first % size, last % size
        if a < b:
            return self._ring[a:b]
        return np.concatenate((self._ring[a:], self._ring[:b]))

    def through_artefact(self, end_index: int) -> bool:
        """Whether the samples up to ``end_index`` (exclusive) show a native rhythm of its own
        beside a different dominant cycle (module docstring); False when they are not all here."""
        if self._sos is None:
            return False
        back = self._end - end_index  # samples fed after the stretch
        if back < 0 or back + self._need > self._count:
            return False
        x = self._stretch(end_index - self._need, end_index)
        template = None if self.template is None else (self.template, self.template_rr)
        return native_beside_cycle(x, self.fs, self._sos, self._lf_sos, self.settings, template)


def native_beside_cycle(
    x: FloatArray,
    fs: float,
    sos: FloatArray,
    lf_sos: FloatArray,
    s: NativeRhythmSettings,
    template: tuple[FloatArray, float] | None = None,
) -> bool:
    """Whether the last ``span_s`` of ``x`` hold a native rhythm beside a different dominant cycle:
    the band's peaks regular (``regular_rate``), or, with the patient's ``template``, the peaks
    that match it regular, at about the RR it was learnt at, allowing for beats the artefact hid
    (``rate_with_dropouts``).  ``template``: the complex and that RR in samples."""
    n = round(s.span_s * fs)
    hf = filter_once(sos, x)[-n:]
    band = np.abs(hf)
    raw = x[len(x) - n :]
    rates: list[float] = []
    beats = peaks(band, s.height * upper(band, 0.995), round(s.min_gap_s * fs))
    if len(beats) >= 3 and not pacing_spikes(raw, beats, fs, s.spike_share):
        rate = regular_rate(beats, fs, s)
        if rate is not None:
            rates.append(rate)
    if template is not None and not rates:
        complex_, rr = template
        matched = matched_beats(hf, band, complex_, fs, s)
        if len(matched) >= 3 and not pacing_spikes(raw, matched, fs, s.spike_share):
            rate = rate_with_dropouts(matched, fs, s, rr)
            if rate is not None:
                rates.append(rate)
    if not rates:
        return False
    cycle = dominant_rate(filter_once(lf_sos, x)[-n:], fs)
    # Half the rate too: in a VT with alternating complexes the autocorrelation may peak at two
    # cycles, while the band's peaks find every complex.
    return all(abs(cycle - r) > s.apart * r for rate in rates for r in (0.5 * rate, rate, 2.0 * rate))


def regular_rate(beats: list[int], fs: float, s: NativeRhythmSettings) -> float | None:
    """The beats' mean rate when they come regularly, or regularly in pairs, at ``min_rate``-
    ``max_rate`` /min; None otherwise."""
    gaps = [b - a for a, b in pairwise(beats)]
    rr = sorted(gaps)
    k = len(rr) // 2
    mid = rr[k] if len(rr) % 2 else (rr[k - 1] + rr[k]) / 2
    rate = 60.0 * fs / mid
    if not s.min_rate <= rate <= s.max_rate:
        return None
    # Regular, or regular in pairs: a bigeminy (a sinus beat and an ectopic one, short and long
    # intervals in turn) is a rhythm of the patient's too.
    pairs = sorted(a + b for a, b in pairwise(gaps))
    if rr[-1] - rr[0] > s.spread * mid and not (
        len(pairs) >= 2 and pairs[-1] - pairs[0] <= s.spread * pairs[len(pairs) // 2] / 2
    ):
        return None
    # The beats' mean rate (a bigeminy's median interval is its short one).
    return 60.0 * fs * len(gaps) / (beats[-1] - beats[0])


def rate_with_dropouts(beats: list[int], fs: float, s: NativeRhythmSettings, expected_rr: float) -> float | None:
    """The rate of beats matched to the patient's QRS when every RR is a whole multiple (up to
    ``max_dropout`` + 1) of a base RR (the shortest ones' median) within ``dropout_tol`` of it,
    and that base within ``rr_match`` of ``expected_rr`` (samples; the rhythm the QRS was learnt
    in): the patient's rhythm going on, some of its beats hidden from the match by the artefact.
    Noise in VF can line a few peaks up at multiples of some interval, seldom at the patient's.
    None otherwise."""
    if len(beats) < s.min_matched or beats[-1] - beats[0] < s.matched_span * s.span_s * fs:
        return None
    gaps = np.diff(np.asarray(beats, dtype=np.float64))
    # small_stats.median, not np.median (which imports numpy.ma into the daemon, ~1 MB resident):
    # the middle value, or the two middle ones' sum halved, as np.median's mean of them.
    base = median(gaps[gaps < 1.5 * float(gaps.min())].tolist())
    rate = 60.0 * fs / base
    if not s.min_rate <= rate <= s.max_rate or abs(base - expected_rr) > s.rr_match * expected_rr:
        return None
    k = np.round(gaps / base)
    if float(k.max()) > s.max_dropout + 1 or bool(np.any(np.abs(gaps - k * base) > s.dropout_tol * base)):
        return None
    return rate


def _complex(hf: FloatArray, at: int, reach: int, half: int) -> FloatArray | None:
    """The band around its largest magnitude within ``reach`` of ``at``, ``half`` either side,
    turned to a positive peak; None where it runs off ``hf``."""
    lo = max(0, at - reach)
    if lo >= len(hf):
        return None
    peak = lo + int(np.argmax(np.abs(hf[lo : at + reach + 1])))
    if peak - half < 0 or peak + half + 1 > len(hf):
        return None
    segment = hf[peak - half : peak + half + 1]
    return segment if segment[half] >= 0 else -segment


def matched_beats(
    hf: FloatArray, band: FloatArray, template: FloatArray, fs: float, s: NativeRhythmSettings
) -> list[int]:
    """Peaks of ``band`` (``|hf|``) whose complex correlates at ``match_corr`` or more with the
    patient's ``template`` (each turned to a positive peak, best of a shift of up to 2 samples),
    at least ``min_gap_s`` apart (the taller kept)."""
    half = len(template) // 2
    cands = peaks(band, s.match_height * upper(band, 0.995), max(1, round(0.1 * fs)))
    t = template - float(np.mean(template))
    t_norm = float(np.sqrt(np.dot(t, t)))
    if not t_norm > 0.0:
        return []
    good: list[int] = []
    for c in cands:
        lo, hi = c - half - 2, c + half + 3
        if lo < 0 or hi > len(hf):
            continue
        w = hf[lo:hi] if hf[c] >= 0 else -hf[lo:hi]
        # Correlation at the five shifts, each window centred: sliding sums give their means and norms.
        win = np.lib.stride_tricks.sliding_window_view(w, len(template))
        centred = win - win.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", centred, centred))
        corr = (centred @ t) / np.maximum(norms * t_norm, 1e-12)
        if float(corr.max()) >= s.match_corr:
            good.append(c)
    kept: list[int] = []
    gap = round(s.min_gap_s * fs)
    for i in sorted(good, key=lambda j: -band[j]):
        if all(abs(i - j) >= gap for j in kept):
            kept.append(i)
    return sorted(kept)


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
