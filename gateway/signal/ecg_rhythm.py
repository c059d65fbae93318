"""Lethal-rhythm decisions for one ECG channel: ventricular fibrillation/flutter and asystole.

* VF/flutter comes from the streaming ``VfDetector`` (1 s steps).  A flat or saturated quality
  window ends an episode at once: that is a lead or amplifier problem, reported as technical.
* Asystole: no QRS for ``asystole_s`` since the last one, while the signal is still there (its
  band-passed peak over the last second at least ``asystole_min_mv`` and the last quality window
  neither flat nor saturated) and no VF episode is running.  Checked every second, so it is raised
  at most ``asystole_s`` + 1 s after the last beat; it clears when a rhythm is back: ``clear_beats``
  QRS in a row, each within ``clear_rr_s`` of the one before (at least 20 /min).  A single QRS
  ended it before, and an agonal rhythm (vfdb 427 after its VF, annotated as asystole: a wide
  complex every 2 to 7 s) raised and cleared it 15 times in 5 minutes.  A flat line is not
  called asystole: most front-ends give one when an electrode is off, and that is technical.  Nor
  is the time the signal was gone: after a flat or saturated window, ``asystole_s`` is counted
  from its end (MIT-BIH 116 has its amplifier pinned at the rail for 0.7 s and recovering for 5 s
  with no QRS to see, twice: two false asystole alarms, ``bench/ecg_asystole.py``).
  A QRS here is a beat whose slope envelope reaches ``weak_ratio`` of the recent QRS (median of the
  last ``reference_beats``): once the QRS complexes stop, the R-peak detector's search-back lowers
  its threshold and takes P and T waves every few seconds, and those must not hold asystole off.
  A beat under ``mid_ratio`` of the reference and shaped unlike the patient's QRS (correlation
  with the VT detector's reference complex, of either sign, under ``like_corr``) does not enter
  the reference: in atrial flutter the waves left in a standstill reach 0.3-0.45 of the QRS, and
  each one entering pulled the median down onto them until all of them counted (MIT-BIH 222,
  ``bench/ecg_asystole.py``).  Nor does such a beat count when it comes out of a
  pause: only as the continuation of a rhythm, within ``unlike_gap_rr`` times the recent QRS RR
  (``unlike_gap_s`` bounds it) of the last beat that counted, or as the ``unlike_run``-th of a run
  of them at no more than ``1 / unlike_run_rate`` times the recent QRS rate.  In a standstill the
  P, T and flutter waves at 0.3-0.5 of the QRS come seconds apart, or in a run twice as fast as
  the QRS were: each one counted and held the alarm off to 11-17.5 s after the last beat (5
  synthetic standstills of MIT-BIH 200, 222 and 228).  A patient's new rhythm of smaller,
  differently shaped complexes (MIT-BIH 104, 108, 124, 228) comes beat after beat, and a beat
  the R-peak detector misses in noise leaves a gap the next run closes (the gap allowed reaches
  4 s for a slow rhythm: 231's 2:1 block at 35 /min with a beat missed).  When the shape cannot be
  told (no reference complex yet, VT detection off) it enters as any other.  Small beats that keep
  coming at a regular rate (``adapt_beats`` in a row under ``weak_ratio``, each within
  ``adapt_rr_s``, and when one of them is shaped unlike the QRS, each RR within ``adapt_jitter``
  of their median) are an amplitude change, not a standstill: they become the new reference,
  but not once asystole is raised (P waves taken by the search-back in a long standstill).
  What these rules cannot tell from a QRS (``bench/ecg_asystole.py``, lead 0): P waves as large
  as MIT-BIH 108's (0.31-0.67 of its QRS energy in the two of its five standstills missed) and
  as alike it (correlation mostly 0.87-0.99) at the former RR count, or enter the reference.
  222's sharp atrial waves going on at the QRS rate (0.35-0.44, correlation -0.37 to -0.48)
  carry its rhythm 7 s past the last QRS in one standstill (raised at 13.6 s).  A floor on the
  correlation of such waves has no room between them and the patient's own beats in noise: 231's
  on lead 1 fall to -0.3 to -0.56 with electrode motion at 6 dB.
  Nor do they tell a standstill from a rhythm the R-peak detector does not see: vfdb 611 goes
  from sharp sinus beats (slope energy ~92) into a sustained monomorphic VT at ~140 /min of wide
  complexes (~30), of which the detector, its levels learnt on the sinus QRS, found one in 3 to 5
  for 36 s, and asystole was raised 12 s into the VT (1208 s) and held 27 s.  The detector now
  takes a search-back beat with a rejected candidate since the last beat at least 0.9 of its
  size as the sign of a new, smaller QRS (``rpeak_detector``): it has the VT's complexes 4 s
  into it, and no asystole is raised there (``tests/test_signal_rpeak.py``).

* Organised rhythm: a second is never VF-like while the beats of the last ``organised_s`` come
  regularly (RR spread within ``organised_spread`` of the median) at no more than
  ``organised_max_rate`` /min: a plain sinus or paced rhythm with wide, slurred complexes must not be
  called VF however its waveform scores.  Only beats already decided at a step's end are used, so
  the decision does not depend on how the samples are packed.
* Artefact: nor is a step VF-like when its waveform is a rhythmic artefact (tremor, tooth
  brushing) over the patient's own rhythm, whose narrow QRS go on through it at their own rate
  (``native_rhythm``, asked by the VF detector only of a step that would be VF-like; the ECG
  channel keeps the samples and asks the same of a VT run's start).

Everything is in sample indices; the channel turns them into times.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from gateway.signal.ecg_quality import EcgQuality, QualityWindow
from gateway.signal.small_stats import median
from gateway.signal.vf_detector import VfChange, VfDetector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

VENTRICULAR_FIBRILLATION = "ventricular_fibrillation"
ASYSTOLE = "asystole"
NO_SIGNAL = frozenset({EcgQuality.FLAT, EcgQuality.SATURATED})


@dataclass(frozen=True, slots=True)
class RhythmSettings:
    asystole_s: float = 6.0
    asystole_min_mv: float = 0.02
    weak_ratio: float = 0.3
    mid_ratio: float = 0.6
    reference_beats: int = 8
    adapt_beats: int = 6
    adapt_rr_s: float = 2.0
    adapt_jitter: float = 0.25  # ...and, when one of them is unlike the QRS, each RR within this share of their median
    like_corr: float = 0.95
    unlike_gap_rr: float = 2.5
    unlike_gap_s: tuple[float, float] = (1.5, 4.0)
    unlike_run: int = 4
    unlike_run_rate: float = 0.7
    clear_beats: int = 5
    clear_rr_s: float = 3.0
    organised_s: float = 5.0
    organised_max_rate: float = 150.0
    organised_spread: float = 0.25


@dataclass(frozen=True, slots=True)
class RhythmChange:
    index: int  # sample at which the change was decided
    condition: str
    active: bool
    onset_index: int  # where the episode began (VF: middle of the first VF-like window; asystole: the last beat)


class RhythmMonitor:
    def __init__(
        self,
        fs: float,
        settings: RhythmSettings | None = None,
        first_index: int = 0,
        artefact: Callable[[int], bool] | None = None,
    ) -> None:
        self.fs = fs
        self.settings = settings or RhythmSettings()
        self.vf = VfDetector(fs, first_index=first_index)
        # Asked of a step that would be VF-like: is it an artefact over the patient's own rhythm?
        # (``native_rhythm``; the ECG channel keeps the samples it needs.)
        self._artefact = artefact
        # A window first scores VF-like once VF fills about half of it, so the episode's onset is
        # marked at that window's middle, not at its end: on vfdb the end is a median 1.8 s after
        # the annotated onset, the middle 0.1 s before it (bench/ecg_vf.py prints the figures).
        self._onset_back = self.vf.window * self.vf.decimate // 2
        self._first = first_index
        self._fed = 0  # samples fed since ``first_index``
        self.asystole = False
        self._last_beat: int | None = None  # last QRS
        self._back: list[int] = []  # the QRS in a row since an asystole was raised
        self._signal_back: int | None = None  # the end of the last flat or saturated window
        self._no_signal = False
        self._strong: deque[float] = deque(maxlen=self.settings.reference_beats)
        self._reference: float | None = None  # median of ``_strong``, kept until it changes
        # The last small beats in a row (index, energy, unlike the QRS): at most ``adapt_beats``.
        self._weak: deque[tuple[int, float, bool]] = deque(maxlen=self.settings.adapt_beats)
        # Where the last beats that entered the QRS reference were (their RR), and the run of small
        # beats unlike the QRS that did not count since the last beat that did (module docstring).
        self._qrs_at: deque[int] = deque(maxlen=self.settings.reference_beats + 1)
        self._unlike: list[int] = []
        self._beats: deque[tuple[int, int]] = deque(maxlen=64)  # all recent beats: (index, decided index)
        # Whether the beats arrived in index order (the R-peak detector gives them so): the veto
        # then looks only at the last few instead of all 64 (it runs every second).
        self._in_order = True
        self._organised_span = round(self.settings.organised_s * fs)
        self._organised_min_rr = 60.0 / self.settings.organised_max_rate

    @property
    def vf_active(self) -> bool:
        return self.vf.active

    def resume(self, *, vf: bool, asystole: bool, qrs_reference: Iterable[float] = ()) -> None:
        """Go on with the episodes that were on when the samples broke off (a gap, a rate change,
        the daemon's restart).  A break says nothing of the rhythm: ending them there would clear
        a VF or asystole alarm that still holds, and never ending them (a new monitor knows
        nothing of them) would leave a raised alarm without its clear.  So they stay on and the
        samples after the break decide, as they would have without it: VF ends after
        ``clear_steps`` organised steps, asystole when a rhythm is back, either at a flat or saturated
        window.  ``qrs_reference`` (the previous monitor's recent QRS energies, at the same rate)
        keeps the P and T waves of a standstill from counting as QRS."""
        if vf:
            self.vf.resume(self._first)
        self.asystole = asystole and not vf  # never both: asystole is not called during VF
        self._strong.extend(qrs_reference)
        self._reference = None

    @property
    def last_qrs(self) -> int | None:
        """The last beat counted as a QRS (``beat``), the one a standstill is counted from."""
        return self._last_beat

    @property
    def qrs_reference(self) -> list[float]:
        return list(self._strong)

    def beats_within(self, lo: int, hi: int) -> list[int]:
        """The recent beats (the last 64, in the order they came) at sample ``lo`` to ``hi``."""
        return [i for i, _ in self._beats if lo <= i <= hi]

    def small(self, energy: float) -> bool:
        """Whether a beat of this energy is under ``mid_ratio`` of the recent QRS: the channel then
        tells ``beat`` whether it is shaped like the patient's QRS (only these are measured)."""
        return bool(self._strong) and energy < self.settings.mid_ratio * self._median()

    def _median(self) -> float:
        # Asked twice for most beats (``small``, then ``beat``) and unchanged between them.
        if self._reference is None:
            self._reference = median(self._strong)
        return self._reference

    def beat(
        self, index: int, energy: float, decided_index: int | None = None, qrs_like: bool | None = None
    ) -> list[RhythmChange]:
        """A detected beat.  ``qrs_like``: for a small beat (see ``small``), whether its complex
        correlates with the patient's reference QRS; None when that cannot be told."""
        s = self.settings
        beats = self._beats
        if beats and index < beats[-1][0]:
            self._in_order = False
        beats.append((index, index if decided_index is None else decided_index))
        strong = self._strong
        ref = self._median() if strong else 0.0
        if strong and energy < s.weak_ratio * ref:
            weak = self._weak
            if weak and (index - weak[-1][0]) > s.adapt_rr_s * self.fs:
                weak.clear()
            weak.append((index, energy, qrs_like is False))
            if len(weak) < s.adapt_beats or self.asystole:
                # Not while asystole is on: in a standstill the search-back comes to take the P
                # waves (and what the synthetic standstills leave of the T waves) one after the
                # other, regular and at a fifth of the QRS, shaped like it or not.  Taken for a
                # smaller QRS, they cleared the alarm 20-65 s into 27 of 119 standstills of 90 s,
                # 8 now (``bench/ecg_asystole.py --standstill-s 90``).  A QRS that comes back
                # smaller than ``weak_ratio`` of the one before the standstill does not clear it.
                return []
            if any(unlike for _, _, unlike in weak) and not _regular([i for i, _, _ in weak], s.adapt_jitter):
                # Small and unlike the QRS, and irregular: the waves of atrial flutter left in a
                # standstill (MIT-BIH 222: taken every other cycle or two, 0.8 and 1.6 s apart),
                # not the patient's QRS grown smaller.  They cleared the alarm 8 s early in 222
                # before the hold above; since, this only keeps them from holding asystole off
                # before a raise (``bench/ecg_asystole.py`` gives the same figures without it).
                return []
            strong.clear()
            strong.extend(e for _, e, _ in weak)
            strong.append(energy)
            self._reference = None
            self._qrs_at.append(index)
        elif strong and energy < s.mid_ratio * ref and qrs_like is False:
            # Stays out of the reference: in atrial flutter the waves left in a standstill reach
            # 0.3-0.45 of the QRS, and each one entering pulled the median down onto them until
            # all of them counted (MIT-BIH 222: 3 of 5 synthetic standstills never alarmed).  Only
            # when unlike the QRS: the patient's own smaller complexes must still enter, or the
            # reference is left at the level of the larger ones (MIT-BIH 228's PVCs, its other
            # beats 0.3-0.4 of them: 5.3 s without a QRS).  It counts only within a rhythm.
            self._weak.clear()
            if not self._continues_rhythm(index):
                return []
        else:
            strong.append(energy)
            self._reference = None
            self._qrs_at.append(index)
        self._weak.clear()
        self._unlike.clear()
        self._last_beat = index
        if not self.asystole:
            return []
        back = self._back
        if back and index - back[-1] > s.clear_rr_s * self.fs:
            back.clear()
        back.append(index)
        if len(back) < s.clear_beats:
            return []
        return self._end_asystole(index)

    def _continues_rhythm(self, index: int) -> bool:
        """Whether a small beat unlike the QRS at ``index`` goes on with a rhythm: it comes within
        the allowed gap of the last beat that counted, or ends a run of ``unlike_run`` such beats,
        each within that gap of the one before, not much faster than the recent QRS."""
        s = self.settings
        last = self._last_beat
        qrs = self._qrs_at
        rr: float | None = None
        if len(qrs) >= 3:  # two RR intervals at least
            rr = float(median([b - a for a, b in pairwise(qrs)]))
        lo, hi = s.unlike_gap_s
        gap = hi * self.fs if rr is None else min(hi * self.fs, max(lo * self.fs, s.unlike_gap_rr * rr))
        if last is None or index - last <= gap:
            return True
        run = self._unlike
        if run and index - run[-1] > gap:
            run.clear()
        run.append(index)
        if len(run) < s.unlike_run:
            return False
        if rr is not None:
            recent = run[-s.unlike_run :]
            if median([b - a for a, b in pairwise(recent)]) < s.unlike_run_rate * rr:
                return False
        return True

    def next_step_end(self) -> int:
        """The sample index at which the next VF step (and asystole check) ends: the step is
        decided by the samples before it.  The VF detector decimates by keeping every
        ``decimate``-th sample from its first and steps every ``hop`` kept samples, so step ``m``
        is complete once ``(m * hop - 1) * decimate + 1`` samples have arrived."""
        k, hop = self.vf.decimate, self.vf.hop
        m = (self._fed - 1 + k) // (k * hop) + 1
        return self._first + (m * hop - 1) * k + 1

    @property
    def step_period(self) -> int:
        """Input samples between consecutive VF step ends (see ``next_step_end``)."""
        return self.vf.decimate * self.vf.hop

    def feed(self, samples_mv: FloatArray) -> list[RhythmChange]:
        out: list[RhythmChange] = []
        self._fed += len(samples_mv)
        result = self.vf.feed(samples_mv, self._organised, self._artefact)
        # Nearly every call has no episode change: no dict (a comprehension is a call of its own).
        changes = {c.index: c for c in result.changes} if result.changes else {}
        for step in result.steps:
            c = changes.get(step.end_index)
            if c is not None:
                if c.active:
                    out.extend(self._end_asystole(step.end_index))
                out.append(self._vf_change(c))
            self._check_asystole(step.end_index, step.recent_peak_mv, out)
        return out

    def bridge(self, line: FloatArray) -> list[RhythmChange]:
        """A short gap of lost samples, replaced by ``line`` (a straight line across it,
        ``EcgChannel._bridge``): fed as samples, so that the VF steps and the standstill count go
        on across the gap, but no step whose window holds the line keeps VF from being raised
        (``VfDetector.bridged``)."""
        self.vf.bridged(self._first + self._fed + len(line))
        return self.feed(line)

    def _vf_change(self, c: VfChange) -> RhythmChange:
        onset = max(self._first, c.onset_index - self._onset_back)
        return RhythmChange(c.index, VENTRICULAR_FIBRILLATION, c.active, onset)

    def _organised(self, end: int) -> bool:
        lo = end - self._organised_span
        if self._in_order:
            # Newest first, down to the first beat before the span: a handful, not all 64.
            gaps: list[int] = []
            later: int | None = None
            for i, d in reversed(self._beats):
                if i < lo:
                    break
                if i < end and d <= end:
                    if later is not None:
                        gaps.append(later - i)
                    later = i
        else:
            idx = [i for i, d in self._beats if lo <= i < end and d <= end]
            gaps = [b - a for a, b in pairwise(idx)]
        n = len(gaps)
        if n < 2:  # fewer than three beats
            return False
        # The RR intervals in samples, sorted: dividing by fs keeps their order, so these give the
        # sorted intervals in seconds, the same doubles as ``(b - a) / fs`` one by one.
        gaps.sort()
        fs = self.fs
        h = n // 2
        mid = gaps[h] / fs if n % 2 else (gaps[h - 1] / fs + gaps[h] / fs) / 2  # small_stats.median
        return mid >= self._organised_min_rr and gaps[-1] / fs - gaps[0] / fs <= self.settings.organised_spread * mid

    def quality(self, window: QualityWindow) -> list[RhythmChange]:
        """A quality verdict: flat or saturated means no signal, hence no rhythm to call."""
        self._no_signal = window.quality in NO_SIGNAL
        if not self._no_signal:
            return []
        self._signal_back = window.end_index
        out = [self._vf_change(c) for c in self.vf.suppress(window.end_index)]
        return out + self._end_asystole(window.end_index)

    def _check_asystole(self, index: int, peak_mv: float, out: list[RhythmChange]) -> None:
        s = self.settings
        last = self._last_beat
        if self.asystole or last is None or self.vf.active or self._no_signal:
            return
        since = last if self._signal_back is None else max(last, self._signal_back)
        if index - since >= s.asystole_s * self.fs and peak_mv >= s.asystole_min_mv:
            self.asystole = True
            out.append(RhythmChange(index, ASYSTOLE, True, last))

    def _end_asystole(self, index: int) -> list[RhythmChange]:
        if not self.asystole:
            return []
        self.asystole = False
        self._back.clear()
        return [RhythmChange(index, ASYSTOLE, False, index)]


def _regular(beats: list[int], jitter: float) -> bool:
    """Whether every RR of ``beats`` (at least two) is within ``jitter`` of their median."""
    rr = [b - a for a, b in pairwise(beats)]
    m = median(rr)
    return all(abs(r - m) <= jitter * m for r in rr)
