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

Measurements read the R-peak detector's band-passed signal and slope envelope, only samples
before the beat's decision point, so the result does not depend on how the samples were split
into blocks.  Only fast beats, the beat after a fast one, the beats of an episode and the sampled
reference beats are measured: at a steady normal rate the detector costs a comparison per beat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from gateway.frozen_init import fast_init
from gateway.signal.small_stats import median

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

VENTRICULAR_TACHYCARDIA = "ventricular_tachycardia"


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


def measure(
    bp: FloatArray, env: FloatArray, start: int, r_bp: int, r_env: int, before: int, after: int, stop: int
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
    return Shape(bp[lo:hi], left + right)


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
        self._refs: list[Shape] = []
        self._slow = 0  # slow beats seen (for sampling the reference)
        self._reference: tuple[FloatArray, float] | None = None  # (template, width), from _refs when asked
        self._recent: list[tuple[int, Shape | None]] = []  # (index, shape if ventricular), the last run_beats
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

    def expire(self, index: int) -> VtChange | None:
        """At sample ``index`` with no beat since the last: an episode ends after ``max_pause_s``."""
        last = self._since if self._last is None else self._last
        if not self.active or index - last <= self.settings.max_pause_s * self.fs:
            return None
        self.reset()
        return VtChange(index, False, index)

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
        rr, prev = index - last, self._last_rr
        self._last, self._last_rr = index, rr
        fast = rr <= self.fast_rr and prev is not None and abs(rr - prev) <= s.fast_jitter * rr
        ventricular = shape is not None and self._ventricular(shape, fast)
        recent = self._recent
        recent.append((index, shape if ventricular else None))
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
            return VtChange(index, True, next(i for i, v in recent if v is not None))
        return None

    def _run(self, recent: list[tuple[int, Shape | None]]) -> bool:
        s = self.settings
        shapes = [v for _, v in recent if v is not None]
        if len(shapes) < s.ventricular_beats:
            return False
        span = recent[-1][0] - recent[0][0]
        if (len(recent) - 1) * 60.0 * self.fs < s.min_rate * span:
            return False
        alike = sorted(correlation(a.segment, b.segment) for a, b in pairwise(shapes))
        return alike[len(alike) // 2] >= s.min_consistency

    def reference(self) -> tuple[FloatArray, float] | None:
        """The reference template and width, or None before ``min_reference`` beats are held.
        Computed when first asked after a new reference beat, not at every one: the median of the
        complexes costs more than all the rest of a beat's work, and most are never compared with."""
        refs = self._refs
        if self._reference is None and len(refs) >= self.settings.min_reference:
            # np.median's arithmetic on a sort: np.median itself imports numpy.ma (~1 MB resident).
            rows = np.sort(np.array([r.segment for r in refs]), axis=0)
            n = len(refs)
            template = rows[n // 2] if n % 2 else np.mean(rows[n // 2 - 1 : n // 2 + 1], axis=0)
            self._reference = (template, median(r.width for r in refs))
        return self._reference

    def _ventricular(self, shape: Shape, fast: bool = False) -> bool:
        s = self.settings
        ref = self.reference()
        if ref is None:
            return False
        if fast:
            return correlation(shape.segment, ref[0]) < s.fast_max_corr
        if shape.width < s.min_width_ratio * ref[1]:
            return False
        return correlation(shape.segment, ref[0]) < s.max_corr

    def _learn(self, shape: Shape) -> None:
        s = self.settings
        if len(shape.segment) != self.before + self.after + 1:
            return  # cut short by an early decision: not a full reference complex
        refs = self._refs
        refs.append(shape)
        if len(refs) > s.reference_beats:
            del refs[0]
        self._reference = None
