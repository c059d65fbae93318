"""Ventricular tachycardia: a run of wide complexes, unlike the patient's own, at a high rate.

A beat is *ventricular* when it is wider than the patient's reference beat (its slope envelope's
width at half height at least ``min_width_ratio`` times the reference's) and shaped unlike it
(correlation of the band-passed complex with the reference template below ``max_corr``).  Wider
*and* unlike: a fast rhythm whose complexes only change shape (atrial flutter waves riding on
them) or only widen a little (rate-related aberrancy) is not VT; on the 24 MIT-BIH records either
criterion alone raised VT in atrial flutter.  Except at a very high rate: a beat that comes at
``fast_rate`` (200 /min) or faster, within ``fast_jitter`` of the RR before it, is ventricular
when merely unlike the reference.  At 230-250 /min VT's complexes have no time to look wide to
the slope envelope (vfdb 421: width 1.0-1.2 times the reference, correlation 0.7-0.85, none of
its 8 annotated VT episodes called by width); the regular RR keeps out noise, whose bumps are
alike enough but come irregularly (MIT-BIH with electrode motion at 0 dB: 6 false VT alarms
without it, none with it; ``bench/ecg_vt.py``).

The QRS band (5-18 Hz) is blind to what makes some VT plain to the eye: vfdb 611's sustained
monomorphic VT at ~140 /min, 6 mV complexes as broad as a sine wave, has in that band the sharp
edge of a sinus QRS (correlation 0.8-0.9 with the reference, envelope width 1.0-1.6 times it), and
went 15 minutes without a VT alarm.  So a beat is also ventricular when its *raw* complex
(``RawTemplate``: ``RAW_BEFORE_S`` before the R wave to ``RAW_AFTER_S`` after it, detrended) is
broad and unlike the patient's: its equivalent width (area over peak, from its median) at least
``raw_min_width_ratio`` times the reference's and its best correlation with it, over shifts of
up to ``RAW_SHIFT_S``, under ``raw_max_corr`` (611's VT complexes: 1.9-2.6 times and 0.47-0.77,
5th to 95th percentile; 96 % of them pass).  A beat whose QRS-band complex correlates with the
reference at ``own_band_corr`` is the patient's own and not looked at again (most beats of a fast
sinus or atrial rhythm: the whole ECG chain is 0.91 times as fast with the raw complexes,
``bench/ecg_speed.py --chain --baseline``).  The raw ECG also holds what the band filters out:
electrode motion makes broad deflections unlike the QRS.  So a run's ventricular complexes must
also be alike in the raw ECG (the lower median of consecutive ones' best correlation at least
``raw_consistency``), and a run that needs beats only their raw complex called ventricular must
come regularly (every RR within ``raw_run_jitter`` of the median, or of twice it: a complex the
R-peak detector missed), where the detector's motion artefacts fall between the patient's own
beats.  ``bench/ecg_vt.py`` on vfdb, clean: 21 of 32 episodes, 6 false alarms (20 and 10 by the
band alone); electrode motion at 6 dB: 17 and 2 (16, 4); at 0 dB: 7 and 1 (7, 3); on MIT-BIH, one
false alarm at 0 dB (none).  Without the consistency test: 10 false alarms clean, 4 on MIT-BIH
at 0 dB; without the regularity: 9 and 3, and one more episode (``--set raw_consistency=-1``,
``--set raw_run_jitter=10``).  (Figures of when this rule came in; the detector has changed
since: 22 of 32 and 5 clean today.)  One mark off the beat is allowed in such a run
(``raw_run_misplaced``, ``regular``): the detector marks a later wave of some of 611's broad
complexes (RR 0.66 then 0.22 s in a VT at 0.44 s), and the run broke there every few beats:
its VT alarm came 46 s into the VT, 19 s now; the rest of vfdb and MIT-BIH (clean, electrode
motion and muscle noise at 6 and 0 dB) unchanged; rhythmic artefact bursts
(``bench/ecg_artefact.py``) raising VT 1,191 -> 1,225 of 5,400.

An episode starts when, of the last ``run_beats`` beats, at least ``ventricular_beats`` are
ventricular, their mean rate is at least ``min_rate`` and the ventricular complexes are alike
(median correlation of consecutive ones at least ``min_consistency``: noise also makes complexes
unlike the patient's, but not alike one another).  The rate is the run's, not each RR's: the
R-peak detector misses some of VT's broad complexes, and one missed beat must not break the run.
It ends after ``clear_beats`` non-ventricular beats in a row spanning ``clear_s`` from the last
ventricular one, or a pause of ``max_pause_s``.

The reference is the patient's own beats at a slow rate (this RR and the one before at least
``60 / min_rate``, no episode on): the median of the last ``reference_beats`` of them, every such
beat until that many are held, then every ``reference_every``-th (the median of a few arrays is
the costly part).  No VT is called before ``min_reference`` beats are held: without a reference a
wide complex cannot be told from the patient's own.  A patient whose own beats are wide (bundle
branch block, paced) thus has a wide reference, and a sinus tachycardia with those beats is not VT.

Measurements read the R-peak detector's band-passed signal and slope envelope, and the raw
samples the channel keeps (``NativeRhythm.samples``), only samples before the beat's decision
point (a reference beat's raw complex is read at the next beat's), so the result does not depend
on how the samples were split into blocks.  Only fast beats, the beat after a fast one, the beats
of an episode and the sampled reference beats are measured: at a steady normal rate the detector
costs a comparison per beat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from gateway.frozen_init import fast_init
from gateway.signal.small_stats import median, median_rows

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

VENTRICULAR_TACHYCARDIA = "ventricular_tachycardia"
# The raw complex compared by ``RawTemplate``: from before the R wave to after it, each way shifted
# by up to ``RAW_SHIFT_S`` for the best match (a wide complex's R mark falls anywhere on it).
RAW_BEFORE_S = 0.12
RAW_AFTER_S = 0.16
RAW_SHIFT_S = 0.04
NOT_VENTRICULAR, BY_BAND, BY_RAW_COMPLEX = 0, 1, 2


@dataclass(frozen=True, slots=True)
class VtSettings:
    enabled: bool = True
    min_rate: float = 100.0  # /min, the run's mean rate
    run_beats: int = 6
    ventricular_beats: int = 5  # of the last run_beats
    # An episode ends after ``clear_beats`` non-ventricular beats in a row, the first at least
    # ``clear_s`` after the last ventricular one.  The time, not only the beats: vfdb 421 has runs of
    # VT 1-2 sinus beats apart, and 3 beats alone raised and cleared the alarm 39 times in 6
    # minutes, while 6 beats alone kept it on for 7 s after VT in slow atrial fibrillation (615).
    clear_beats: int = 3
    clear_s: float = 3.0
    max_pause_s: float = 2.0
    max_corr: float = 0.8
    min_width_ratio: float = 1.3
    # 0.9: muscle noise at 0 dB made alike-enough "complexes" at 0.7 (25 false VT alarms on the
    # 24 MIT-BIH records, none at 0.9), while vfdb's VT runs are monomorphic (bench/ecg_vt.py)
    min_consistency: float = 0.9
    reference_beats: int = 9
    reference_every: int = 4
    min_reference: int = 3
    # A beat at least this fast (its RR, /min) is ventricular when merely unlike the reference
    # (correlation under ``fast_max_corr``), whatever its width; 0 turns this off.
    fast_rate: float = 200.0
    fast_max_corr: float = 0.9
    fast_jitter: float = 0.15  # ...and its RR within this share of the RR before (a regular run)
    # A beat is also ventricular when its raw complex is at least this many times as broad as the
    # patient's (``RawTemplate``; 0 turns this off)...
    raw_min_width_ratio: float = 1.7
    raw_max_corr: float = 0.8  # ...and unlike it.  Not asked of a beat whose QRS-band complex
    own_band_corr: float = 0.95  # correlates this well with the reference: the patient's own, and cheaper.
    raw_consistency: float = 0.9  # a run's ventricular complexes, alike in the raw ECG
    # A run that needs raw-complex beats is regular: each RR within this share of the median (or twice it).
    raw_run_jitter: float = 0.25
    # ...but for up to this many marks off the beat (two RRs that sum to twice the run's: ``regular``).
    raw_run_misplaced: int = 1


@dataclass(frozen=True, slots=True)
class VtChange:
    index: int  # the beat that decided it
    active: bool
    onset_index: int  # the run's first ventricular beat


@fast_init  # one per measured beat
@dataclass(frozen=True, slots=True)
class Shape:
    """One complex as the R-peak detector's filters saw it."""

    segment: FloatArray  # band-passed samples around the R wave
    width: int  # slope envelope's width at half height, in samples (a lower bound if cut short)
    # The raw ECG from ``RAW_BEFORE_S + RAW_SHIFT_S`` before the R wave up to the beat's decision
    # point (at most ``RAW_AFTER_S + RAW_SHIFT_S`` after it); None when not held.
    raw: FloatArray | None = None


def measure(
    bp: FloatArray,
    env: FloatArray,
    start: int,
    r_bp: int,
    r_env: int,
    before: int,
    after: int,
    stop: int,
    raw: FloatArray | None = None,
) -> Shape | None:
    """The complex whose band-passed R wave is at absolute index ``r_bp`` and whose envelope
    peaks near ``r_env`` (later on a wide complex), from buffers ``bp``/``env`` that start at
    absolute index ``start``, reading only samples before ``stop``.  None when the buffers do not
    hold enough of it."""
    lo = r_bp - before - start
    hi = min(r_bp + after + 1, stop, start + len(bp)) - start
    if lo < 0 or hi - lo < before + 1:
        return None
    b = min(r_env + after, stop, start + len(env)) - start
    if b <= lo:
        return None
    k = lo + int(env[lo:b].argmax())
    half = 0.5 * env[k]
    left_end = max(0, k - 2 * before)
    below_left = (env[left_end:k] <= half).nonzero()[0]
    left = k - (left_end + int(below_left[-1])) if len(below_left) else k - left_end
    right_end = min(stop - start, len(env))
    below_right = (env[k:right_end] <= half).nonzero()[0]
    right = int(below_right[0]) if len(below_right) else right_end - k
    return Shape(bp[lo:hi], left + right, raw)


@cache
def _ramp(n: int) -> tuple[FloatArray, float]:
    """The centred ramp of ``n`` samples and the inverse of its squared norm (0 when under 2)."""
    c: FloatArray = np.arange(n, dtype=np.float64) - 0.5 * (n - 1)
    cc = float(c.dot(c))
    return c, (1.0 / cc if cc > 0 else 0.0)


def detrended(x: FloatArray) -> FloatArray:
    """``x`` less its least-squares line: baseline wander over a complex is not its shape."""
    n = len(x)
    if n == 0:
        return x.copy()
    c, inv = _ramp(n)
    return x - float(x.sum()) / n - float(x.dot(c)) * inv * c


def spread(x: FloatArray) -> float:
    """Equivalent width of a detrended complex, in samples: its area over its peak, both from its
    median (a narrow QRS with flat surroundings is a few tens of milliseconds, a broad wave most of
    the window; from the mean, a tall narrow complex would shift the flat level it stands on)."""
    n = len(x)
    if n == 0:
        return 0.0
    # The median by a partition: np.median imports numpy.ma (~1 MB resident) into the daemon.
    lo, hi = (n - 1) // 2, n // 2
    part = np.partition(x, (lo, hi))
    a = np.abs(x - 0.5 * (float(part[lo]) + float(part[hi])))
    top = float(a.max())
    return float(a.sum()) / top if top > 0 else 0.0


def best_correlation(x: FloatArray, t: FloatArray) -> float:
    """The highest correlation of the detrended template ``t`` with a detrended window of ``x``
    as long as it, over every such window (-1 when none has any shape)."""
    n = len(t)
    windows = np.lib.stride_tricks.sliding_window_view(x, n)
    # Correlation with a detrended template ignores the windows' own line: only their norms need it.
    c, inv = _ramp(n)
    sums, slopes = windows.sum(axis=1), windows @ c
    energy = np.einsum("ij,ij->i", windows, windows)
    power = energy - sums * sums / n - slopes * slopes * inv
    # A window that is a line to rounding has no shape: its power is cancellation noise.
    shaped = power > 1e-9 * energy
    if not shaped.any():
        return -1.0
    corr = (windows[shaped] @ t) / np.sqrt(power[shaped] * float(t.dot(t)))
    return min(1.0, float(corr.max()))


class RawTemplate:
    """The patient's raw complex (``RAW_BEFORE_S`` before the R wave to ``RAW_AFTER_S`` after),
    and whether another is broad and unlike it (``broad_and_unlike``)."""

    def __init__(self, template: FloatArray) -> None:
        self.template = template
        self._cuts: dict[int, tuple[FloatArray, float]] = {}  # its start, detrended, and spread, by length

    def cut(self, n: int) -> tuple[FloatArray, float]:
        """The template's first ``n`` samples detrended, and their ``spread`` (kept: a complex cut
        short by its decision point is compared with as much of the template, and the decision
        comes at much the same point beat after beat)."""
        got = self._cuts.get(n)
        if got is None:
            t = detrended(self.template[:n])
            got = self._cuts[n] = (t, spread(t))
        return got

    def broad_and_unlike(self, raw: FloatArray, shift: int, min_width_ratio: float, max_corr: float) -> bool:
        """Whether the raw complex ``raw`` (``shift`` samples of margin each way around the span of
        the template, possibly cut short at its end) is broad and unlike the template: its
        equivalent width at least ``min_width_ratio`` times the template's, and its best
        correlation with it over shifts of up to ``shift`` samples under ``max_corr``, both
        detrended over the same length.  False when under half of it is held."""
        n = min(len(self.template), len(raw) - 2 * shift)
        if n < len(self.template) // 2:
            return False
        t, width = self.cut(n)
        if width <= 0 or spread(detrended(raw[shift : shift + n])) < min_width_ratio * width:
            return False
        return best_correlation(raw[: n + 2 * shift], t) < max_corr


def regular(rr: list[int], jitter: float, misplaced: int) -> bool:
    """Whether the intervals ``rr`` (in order) are each within ``jitter`` of their median or of
    twice it (a beat missed), but for up to ``misplaced`` pairs of consecutive ones that together
    are within ``jitter`` of twice it: a complex missed and a mark on a later wave of it, off the
    beat (vfdb 611's VT at 0.44 s: 0.66 then 0.22 s).  Not a mark between two beats (two that
    make one interval together): electrode motion makes those (``bench/ecg_artefact.py``)."""
    mid = sorted(rr)[len(rr) // 2]
    lo1, hi1, lo2, hi2 = (1 - jitter) * mid, (1 + jitter) * mid, (2 - jitter) * mid, (2 + jitter) * mid

    def near(r: int) -> bool:
        return lo1 <= r <= hi1 or lo2 <= r <= hi2

    def rest(i: int, left: int) -> bool:  # a run has a handful of intervals: the search is tiny
        if i == len(rr):
            return True
        if near(rr[i]) and rest(i + 1, left):
            return True
        return left > 0 and i + 1 < len(rr) and lo2 <= rr[i] + rr[i + 1] <= hi2 and rest(i + 2, left - 1)

    return rest(0, misplaced)


def correlation(x: FloatArray, template: FloatArray) -> float:
    """Normalised correlation over their common start (a segment cut short by its decision point
    is compared with as much of the template)."""
    n = min(len(x), len(template))
    x, t = x[:n], template[:n]
    # math.sqrt, not np.sqrt on a numpy scalar (~3k instructions of ufunc set-up): both are IEEE
    # square roots, correctly rounded, so the same double (the product is >= 0, never negative).
    den = math.sqrt(x.dot(x) * t.dot(t))
    return float(x.dot(t)) / den if den > 0 else 0.0


class VtDetector:
    """Run-of-ventricular-beats state for one ECG channel (see the module docstring)."""

    def __init__(self, fs: float, settings: VtSettings | None = None) -> None:
        self.fs = fs
        self.settings = s = settings or VtSettings()
        self.slow_rr = 60.0 / s.min_rate * fs  # an RR at least this long is at a normal rate
        self.fast_rr = 60.0 / s.fast_rate * fs if s.fast_rate > 0 else -1.0
        self.clear_after = s.clear_s * fs
        self._last_ventricular = 0  # during an episode: its last ventricular beat (0: none seen)
        self.before = round(0.10 * fs)  # band-passed samples kept before the R wave...
        self.after = round(0.08 * fs)  # ...and after: the complex, decided by then on a narrow beat
        self.raw_before, self.raw_after = round(RAW_BEFORE_S * fs), round(RAW_AFTER_S * fs)
        self.raw_shift = round(RAW_SHIFT_S * fs)
        self._refs: list[Shape] = []
        # The raw complexes of the reference beats, and their median.  A reference beat's is taken
        # at the next beat (``pending_raw``): a sharp narrow beat is often decided before its raw
        # complex has all arrived, and keeping only those decided later kept the broader ones.
        self._raw_refs: list[FloatArray] = []
        self._raw_reference: RawTemplate | None = None
        self._raw_changed = False
        self._pending_raw: int | None = None
        self._slow = 0  # slow beats seen (for sampling the reference)
        self._reference: tuple[FloatArray, float] | None = None  # (template, width), from _refs when asked
        # (index, shape if ventricular, whether only its raw complex made it so), the last run_beats
        self._recent: list[tuple[int, Shape | None, bool]] = []
        self._last: int | None = None
        self._last_rr: float | None = None
        self.active = False
        self._calm = 0
        self._since = 0  # where the current run of samples began (a pause is counted from it too)

    def reset(self) -> None:
        """No signal, VF, or an episode expired: the run restarts and no episode is on (the
        reference is the patient's, and is kept; a gap in the samples is ``restart``)."""
        self._recent.clear()
        self._last = None
        self._last_rr = None
        self.active = False
        self._calm = 0

    def restart(self, first_index: int, *, episode_on: bool = False) -> None:
        """A gap in the samples: the run restarts there.  An episode on stays on until the beats
        after the gap end it (``clear_beats`` of them not ventricular, or ``max_pause_s`` with none):
        a gap is no evidence that VT is over, and its alarm must not stay raised for lack of one.
        ``episode_on``: an episode raised before the daemon restarted, which this detector never saw."""
        active = self.active or episode_on
        self.reset()
        self.active = active
        self._since = first_index
        self._pending_raw = None  # its samples are gone

    def expire(self, index: int) -> VtChange | None:
        """At sample ``index`` with no beat since the last: an episode ends after ``max_pause_s``."""
        last = self._since if self._last is None else self._last
        if not self.active or index - last <= self.settings.max_pause_s * self.fs:
            return None
        self.reset()
        return VtChange(index, False, index)

    def raw_span(self, index: int, stop: int) -> tuple[int, int]:
        """The raw samples (indices ``first`` to ``last``, exclusive) that are the ``Shape.raw`` of
        the beat at ``index`` decided at ``stop``: none after the decision point, so the shape does
        not depend on how the samples were packed into blocks."""
        return index - self.raw_before - self.raw_shift, min(index + self.raw_after + self.raw_shift + 1, stop)

    def _reference_beat(self, index: int) -> bool:
        last, prev = self._last, self._last_rr
        return (
            not self.active
            and last is not None
            and prev is not None
            and index - last >= self.slow_rr
            and prev >= self.slow_rr
        )

    def wants_shape(self, index: int) -> bool:
        """Whether the beat at ``index`` is to be measured before ``beat`` is called."""
        if self._last is None:
            return False
        if self._reference_beat(index):
            s = self.settings
            if len(self._refs) < s.reference_beats or (self._slow + 1) % s.reference_every == 0:
                return True
        # A fast beat, or the one after a fast beat (its RR may hide a missed complex), or any
        # beat of an episode: at a steady normal rate nothing but the sampled references is measured.
        fast = index - self._last < self.slow_rr or (self._last_rr is not None and self._last_rr < self.slow_rr)
        return len(self._refs) >= self.settings.min_reference and (fast or self.active)

    def beat(self, index: int, shape: Shape | None) -> VtChange | None:
        s = self.settings
        last = self._last
        if last is None or index - last > s.max_pause_s * self.fs:
            # The first beat, after a gap or a pause: no RR yet.  A pause ends an episode.
            change = None
            if self.active and (last is not None or index - self._since > s.max_pause_s * self.fs):
                change = VtChange(index, False, index)
                self.active = False
            self._recent.clear()
            self._calm = 0
            self._last, self._last_rr = index, None
            return change
        if self._reference_beat(index):
            self._slow += 1
            if shape is not None and (len(self._refs) < s.reference_beats or self._slow % s.reference_every == 0):
                self._learn(shape)
                self._pending_raw = index
        rr, prev = index - last, self._last_rr
        self._last, self._last_rr = index, rr
        fast = rr <= self.fast_rr and prev is not None and abs(rr - prev) <= s.fast_jitter * rr
        how = NOT_VENTRICULAR if shape is None else self._ventricular(shape, fast)
        ventricular = how != NOT_VENTRICULAR
        recent = self._recent
        recent.append((index, shape if ventricular else None, how == BY_RAW_COMPLEX))
        if len(recent) > s.run_beats:
            del recent[0]
        if self.active:
            if ventricular:
                self._calm, self._last_ventricular = 0, index
            else:
                self._calm += 1
            if self._calm >= s.clear_beats and index - self._last_ventricular >= self.clear_after:
                self.active = False
                self._calm = 0
                return VtChange(index, False, index)
            return None
        if ventricular and len(recent) == s.run_beats and self._run(recent):
            self.active = True
            self._calm, self._last_ventricular = 0, index
            return VtChange(index, True, next(i for i, v, _ in recent if v is not None))
        return None

    def _run(self, recent: list[tuple[int, Shape | None, bool]]) -> bool:
        s = self.settings
        shapes = [v for _, v, _ in recent if v is not None]
        if len(shapes) < s.ventricular_beats:
            return False
        span = recent[-1][0] - recent[0][0]
        if (len(recent) - 1) * 60.0 * self.fs < s.min_rate * span:
            return False
        alike = sorted(correlation(a.segment, b.segment) for a, b in pairwise(shapes))
        if alike[len(alike) // 2] < s.min_consistency:
            return False
        # Monomorphic VT repeats itself in the raw ECG too, and that rules out noise riding on the
        # patient's own complexes, which the QRS band hardly sees (``bench/ecg_vt.py``).
        alike_raw = sorted(c for a, b in pairwise(shapes) if (c := self._raw_alike(a, b)) is not None)
        if len(alike_raw) >= 2 and alike_raw[(len(alike_raw) - 1) // 2] < s.raw_consistency:
            return False
        if len(shapes) - sum(raw for _, _, raw in recent) >= s.ventricular_beats:
            return True
        # The run needs beats that only their raw complexes called ventricular.  Electrode motion
        # makes broad deflections unlike the QRS, and the R-peak detector takes some of them for
        # beats between the patient's own: such a run comes irregularly.  VT's comes regularly, but
        # for a broad complex the detector missed (an RR of about twice the others).
        return regular([b[0] - a[0] for a, b in pairwise(recent)], s.raw_run_jitter, s.raw_run_misplaced)

    def _raw_alike(self, a: Shape, b: Shape) -> float | None:
        """How alike two complexes are in the raw ECG: the best correlation of ``a`` with ``b``
        over the shifts ``RawTemplate`` allows; None when either is not held."""
        if a.raw is None or b.raw is None:
            return None
        k = self.raw_shift
        n = min(len(a.raw), len(b.raw)) - 2 * k
        if n < (self.raw_before + self.raw_after + 1) // 2:  # as ``RawTemplate.broad_and_unlike``
            return None
        return best_correlation(b.raw[: n + 2 * k], detrended(a.raw[k : k + n]))

    def reference(self) -> tuple[FloatArray, float] | None:
        """The reference template and width, or None before ``min_reference`` beats are held.
        Computed when first asked after a new reference beat, not at every one: the median of the
        complexes costs more than all the rest of a beat's work, and most are never compared with."""
        refs = self._refs
        if self._reference is None and len(refs) >= self.settings.min_reference:
            self._reference = (median_rows([r.segment for r in refs]), median(r.width for r in refs))
        return self._reference

    def raw_template(self) -> RawTemplate | None:
        """The median of the reference beats' raw complexes, or None before ``min_reference``."""
        refs = self._raw_refs
        if self._raw_changed and len(refs) >= self.settings.min_reference:
            self._raw_changed = False
            self._raw_reference = RawTemplate(median_rows(refs))
        return self._raw_reference

    def _ventricular(self, shape: Shape, fast: bool = False) -> int:
        """``NOT_VENTRICULAR``, ``BY_BAND`` (the QRS band's shape and width, or a fast beat merely
        unlike the reference) or ``BY_RAW_COMPLEX`` (only the raw complex: ``RawTemplate``)."""
        s = self.settings
        ref = self.reference()
        if ref is None:
            return NOT_VENTRICULAR
        band = correlation(shape.segment, ref[0])
        if fast:
            return BY_BAND if band < s.fast_max_corr else NOT_VENTRICULAR
        if band < s.max_corr and shape.width >= s.min_width_ratio * ref[1]:
            return BY_BAND
        raw, template = shape.raw, self.raw_template()
        if (
            s.raw_min_width_ratio > 0
            and band < s.own_band_corr
            and raw is not None
            and template is not None
            and template.broad_and_unlike(raw, self.raw_shift, s.raw_min_width_ratio, s.raw_max_corr)
        ):
            return BY_RAW_COMPLEX
        return NOT_VENTRICULAR

    def _learn(self, shape: Shape) -> None:
        s = self.settings
        if len(shape.segment) != self.before + self.after + 1:
            return  # cut short by an early decision: not a full reference complex
        refs = self._refs
        refs.append(shape)
        if len(refs) > s.reference_beats:
            del refs[0]
        self._reference = None

    def pending_raw(self) -> int | None:
        """The reference beat whose raw complex ``learn_raw`` waits for, if any."""
        return self._pending_raw

    def learn_raw(self, raw: FloatArray | None) -> None:
        """The raw complex of the ``pending_raw`` beat, in full (``raw_span`` of it with no stop
        before its end), or None when the samples are not held: the reference goes on without it."""
        self._pending_raw = None
        a = self.raw_shift
        b = a + self.raw_before + self.raw_after + 1
        if raw is None or len(raw) < b:
            return
        refs = self._raw_refs
        refs.append(raw[a:b])
        if len(refs) > self.settings.reference_beats:
            del refs[0]
        self._raw_changed = True
