"""Streaming QRS (R-peak) detector with explicit state.

Design, after Pan & Tompkins (1985) and Hamilton & Tompkins (1986), reworked for streaming with
a latency bound:

1. Band-pass 5-18 Hz (causal Butterworth), first difference, absolute value, low-pass 4 Hz: a
   slope envelope that peaks once per QRS, ``feature_delay`` samples (~86 ms) after the R wave.
   Rectified rather than squared slope (as Hamilton & Tompkins): a PVC ten times a sinus beat's
   energy is only ~3 times its slope, so the sinus beats next to it stay above threshold.
2. A QRS candidate is a sample of that envelope that is the largest within ``refractory`` before it
   and a look-ahead after it, and is decided when the look-ahead has arrived, never later.  The
   look-ahead (150 ms at most, 40 ms at least) only serves to see whether a larger complex
   follows, so it ends as soon as the complex is over: the envelope has fallen to 30 % of the
   peak (50 % for a candidate at least as large as the learnt QRS level).  It is also bounded by
   two deadlines counted from the rise of the envelope, near which the R wave lies (the envelope
   peak comes late on wide, paced and ventricular complexes): 230 ms after the half rise and
   250 ms after the foot (the envelope's last sample below 30 % of the peak, or of the QRS level
   for a smaller candidate, and below the noise level).  While learning (the first ``learn_s``)
   only the half-rise deadline applies: with no QRS level yet, an early decision on a noise bump
   would shadow the first QRS.
3. Precursors: a candidate whose envelope is still climbing past ``precursor_ratio`` of its peak
   when the look-ahead ends announces a larger complex (a tall P wave before its QRS, a pacing
   spike before the paced QRS); it is set aside and does not overshadow that complex.
4. Adaptive thresholds: running signal and noise peak levels; a candidate above
   ``noise + k * (signal - noise)`` is a beat (k = 0.3125, Hamilton & Tompkins).  The first
   ``learn_s`` use 0.3 x the running maximum; the signal level starts from the largest complex.
5. Search-back, bounded by the latency budget: once the time since the last beat exceeds
   ``searchback_rr`` times the recent (median) RR, the threshold halves, so a small beat that
   arrives late is still taken - prospectively, since a beat cannot be reported seconds later.
   A beat so taken that is no larger than candidates rejected since the last beat says they
   were beats of a new, smaller QRS: the noise level is taken again without them.
6. T-wave discrimination: a candidate closer than ``t_wave_window`` to the previous beat whose
   envelope is under ``t_wave_ratio`` of that beat's (half the slope) is a T wave.
7. The R wave is located as the extreme of the band-passed signal near the candidate.

All state lives in :class:`DetectorState`: fixed-size tails of the filtered signals and a few
numbers, so memory does not grow with time, and any split of the input into blocks gives exactly
the beats of the whole signal processed at once (tested with hypothesis).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from operator import neg
from typing import TYPE_CHECKING

import numpy as np

from gateway.frozen_init import fast_init
from gateway.signal.ecg_filters import FeatureDesign, SosFilter, all_finite, design_feature, join_samples
from gateway.signal.small_stats import median

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

_FLOAT64 = np.dtype(np.float64)
_ONE = np.array(1, dtype=np.intp)


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """Physiological settings, in seconds or ratios, independent of the sample rate."""

    refractory_s: float = 0.20  # absolute refractory period: no two QRS closer than this
    lookahead_s: float = 0.15  # how long after an envelope peak we wait before deciding on it...
    min_lookahead_s: float = 0.04  # ...at least
    latency_budget_s: float = 0.23  # ...at most this long after the envelope's half rise...
    foot_ratio: float = 0.3  # ...and at most ``foot_budget_s`` after it last stood below this share
    foot_budget_s: float = 0.25  # of the peak or QRS level (the foot of the rise: earlier on wide beats)
    end_ratio: float = 0.3  # the complex is over once its envelope has fallen to this share of the peak...
    sure_ratio: float = 1.0  # ...or, for a candidate at least as large as this share of the QRS level,
    sure_end_ratio: float = 0.5  # to this share: a clear QRS is decided as soon as it has ended
    learn_s: float = 2.0  # thresholds are learnt from the running maximum for this long
    threshold_k: float = 0.3125  # threshold between noise (0) and signal (1) level
    searchback_rr: float = 1.5  # beyond this many RR intervals without a beat, halve the threshold
    precursor_ratio: float = 0.7  # envelope still rising past this share of the peak: a precursor
    t_wave_window_s: float = 0.36
    t_wave_ratio: float = 0.5  # slope (envelope) ratio to the last beat below which it is a T wave
    level_gain: float = 0.125  # adaptation speed of the signal/noise levels, per peak
    min_qrs_mv: float = 0.05  # a QRS smaller than this (as a sharp 1 mV-scaled template) is never a beat
    rr_history: int = 8
    default_rr_s: float = 0.8
    alike_rejected_ratio: float = 0.9  # a rejected candidate this large against a search-back beat was a beat


@fast_init  # one per heartbeat
@dataclass(frozen=True, slots=True)
class Beat:
    """One detected R wave."""

    index: int  # sample index of the R wave (same counter as SampleBlock.first_index)
    decided_index: int  # the sample whose arrival made the beat certain: latency = this - index
    energy: float  # envelope peak, for quality and debugging


_NO_PRECURSOR = -(2**62)  # before any sample
_REJECTED_KEPT = 32


@dataclass(slots=True)
class DetectorState:
    """Everything the detector remembers between blocks (constant size)."""

    design: FeatureDesign
    bandpass: SosFilter
    lowpass: SosFilter
    lookahead: int
    min_lookahead: int
    max_rise: int
    budget: int  # envelope half-rise to decision, in samples
    foot_budget: int  # envelope foot to decision, in samples
    foot_ratio: float
    end_ratio: float
    sure_ratio: float
    sure_end_ratio: float
    back: int  # samples of history kept before the decision frontier
    refractory: int
    learn: int  # samples after a (re)start during which thresholds are learnt
    min_energy: float
    next_index: int = 0  # absolute index of the next sample to arrive
    start_index: int = 0  # where the current run (after start or a gap) began
    # The band-passed signal and the envelope from ``next_index - len(buf_f)`` to ``next_index``: a
    # kept tail of fixed size plus the samples of the last ``extend``.
    buf_bp: FloatArray = field(default_factory=lambda: np.zeros(0))
    buf_f: FloatArray = field(default_factory=lambda: np.zeros(0))
    tops: list[int] = field(default_factory=list)  # the envelope's local maxima (positions in buf_f)
    top_values: list[float] = field(default_factory=list)
    # Where the envelope turns (``_turning_points``: tops and bottoms, alternating), for the
    # look-ahead's scans; None when they scan sample by sample (an envelope that is not finite).
    turns: list[int] | None = None
    rises_first: bool = False  # whether buf_f rises (strictly) from its first sample to the first turn
    decided_upto: int = 0  # candidates before this absolute index have been decided
    learn_max: float = 0.0
    learn_scanned: int = 0
    signal_level: float = 0.0
    noise_level: float = 0.0
    last_beat: int | None = None
    last_beat_energy: float = 0.0
    rr: tuple[int, ...] = ()
    n_noise: int = 0
    # The energies of all candidates rejected so far, summed: with ``n_noise``, what a caller
    # needs for the mean noise peak over any stretch (the levels above are slow averages).
    noise_energy: float = 0.0
    precursor: int = _NO_PRECURSOR  # index of the last candidate set aside as a precursor
    # Every noise-level update since the last beat (peak, gain, rejected only for being under the
    # threshold), and the level then: a search-back beat as large as some of the latter says they
    # were beats too (``_decide``).
    rejected: list[tuple[float, float, bool]] = field(default_factory=list)
    noise_at_beat: float = 0.0


def new_state(fs: float, params: DetectorParams | None = None, first_index: int = 0) -> DetectorState:
    p = params or DetectorParams()
    design = design_feature(fs)
    lookahead = max(2, round(p.lookahead_s * fs))
    refractory = max(2, round(p.refractory_s * fs))
    return DetectorState(
        design=design,
        bandpass=SosFilter.design(design.bandpass),
        lowpass=SosFilter.design(design.lowpass),
        lookahead=lookahead,
        min_lookahead=max(2, round(p.min_lookahead_s * fs)),
        max_rise=round(0.3 * fs),
        budget=round(p.latency_budget_s * fs),
        foot_budget=round(p.foot_budget_s * fs),
        foot_ratio=p.foot_ratio,
        end_ratio=p.end_ratio,
        sure_ratio=p.sure_ratio,
        sure_end_ratio=p.sure_end_ratio,
        back=max(refractory, design.feature_delay + round(0.1 * fs)) + 1,
        refractory=refractory,
        learn=round(p.learn_s * fs),
        min_energy=design.unit_peak * p.min_qrs_mv,  # the envelope is linear in amplitude
        next_index=first_index,
        start_index=first_index,
        decided_upto=first_index,
        learn_scanned=first_index,
    )


def restart(state: DetectorState, first_index: int) -> None:
    """Forget the signal (after a gap): filters and candidates restart, learnt levels are kept,
    and so is the end of learning when it was over.  Learning again from every gap, the
    detector took 0.3 x the largest complex it had ever seen as its threshold for 2 s: a link
    that lost a frame every few seconds kept it learning, and the smaller complexes of a
    patient whose beats vary (MIT-BIH 104's paced and fused beats, a third of the largest)
    went unseen for seconds on end (``bench/ecg_asystole.py --lose``: false asystole alarms)."""
    learnt = state.next_index >= state.start_index + state.learn and state.signal_level > 0
    state.bandpass.reset()
    state.lowpass.reset()
    state.next_index = state.decided_upto = state.learn_scanned = first_index
    state.start_index = first_index - state.learn if learnt else first_index
    state.buf_bp = np.zeros(0)
    state.buf_f = np.zeros(0)
    state.tops = []
    state.top_values = []
    state.turns = None
    state.last_beat = None
    state.rr = ()
    state.rejected = []
    # An index of the samples before: after a device whose count starts again at 0 (a new link,
    # ``SampleBlock.first_index``) it lay ahead of the new samples and emptied a slice (a crash).
    state.precursor = _NO_PRECURSOR


@dataclass(frozen=True, slots=True)
class Levels:
    """What the detector has learnt of a patient's signal: what ``restart`` keeps across a gap,
    and what a new process takes over from the last (``adopt``)."""

    signal_level: float
    noise_level: float
    learn_max: float
    last_beat_energy: float
    n_noise: int


def learnt(state: DetectorState) -> Levels:
    return Levels(state.signal_level, state.noise_level, state.learn_max, state.last_beat_energy, state.n_noise)


def adopt(state: DetectorState, levels: Levels) -> None:
    """Start from ``levels`` instead of learning them again: a new detector then behaves as one
    restarted after a gap (``restart``), e.g. P and T waves stay below threshold in a standstill."""
    state.signal_level = levels.signal_level
    state.noise_level = levels.noise_level
    state.learn_max = levels.learn_max
    state.last_beat_energy = levels.last_beat_energy
    state.n_noise = levels.n_noise


def process(state: DetectorState, samples_mv: FloatArray, params: DetectorParams | None = None) -> list[Beat]:
    """Feed the next contiguous samples (in mV); return the beats decided by them, in order."""
    if len(samples_mv) == 0:
        return []
    extend(state, samples_mv)
    return decide(state, state.next_index, params or DetectorParams())


def extend(state: DetectorState, samples_mv: FloatArray) -> None:
    """Filter the next contiguous samples (in mV) into the detector's buffers, deciding nothing.

    ``decide`` then takes the candidates up to any point of them: a caller that must see the beats
    decided by each of several points inside a batch (the ECG channel's quality-window and VF-step
    ends) filters the batch once and decides at each point, which gives exactly the beats and the
    state of feeding the pieces one by one to ``process``.  Before the next ``extend``, ``decide``
    must have been run up to the end of these samples (the buffers keep only a fixed tail).
    """
    n = len(samples_mv)
    if n == 0:
        return
    fs = state.design.fs
    keep = state.back + state.lookahead + state.max_rise
    # Views, not copies: each batch's buffers are fresh arrays, so the kept tail pins at most one
    # batch's worth of memory.
    tail_bp = state.buf_bp[-keep:]
    k = len(tail_bp)
    # The new samples are band-passed in place in the concatenation (our own array: the copy
    # that ``SosFilter.run`` makes of the caller's samples is the concatenation's), and the
    # slope in place too: the same kernel on the same numbers.
    if samples_mv.dtype is _FLOAT64 and samples_mv.ndim == 1:
        buf_bp = join_samples((tail_bp, samples_mv))  # the tail is our own float64
    else:
        buf_bp = np.concatenate((tail_bp, samples_mv))
    bp = state.bandpass.run_in_place(buf_bp[k:])
    slope = bp - buf_bp[k - 1 : -1] if k else np.concatenate(((0.0,), bp[1:] - bp[:-1]))
    np.abs(slope, out=slope)
    slope *= fs
    env = state.lowpass.run_in_place(slope)
    buf_f = join_samples((state.buf_f[-keep:], env))
    state.buf_bp = buf_bp
    state.buf_f = buf_f
    # Every candidate is a local maximum of the envelope, and so is the largest sample inside any
    # stretch that is not at one of its ends.  So "is a sample of this stretch above the
    # candidate" is asked of the stretch's two ends and of the few local maxima inside it, read on
    # Python floats, instead of a numpy reduction over the stretch for each candidate (a numpy
    # call costs as much as looking at a hundred Python floats).
    tops, state.turns, state.rises_first = _turning_points(buf_f)
    state.tops = tops.tolist()
    state.top_values = buf_f[tops].tolist()  # Python floats: the same doubles, compared alike
    state.next_index += n


def _turning_points(f: FloatArray) -> tuple[npt.NDArray[np.intp], list[int] | None, bool]:
    """The envelope's tops (``f[t - 1] < f[t] >= f[t + 1]``) and, when it is finite, all its turns
    (tops and bottoms, ``f[b - 1] >= f[b] < f[b + 1]``, in order) and whether it rises from its
    first sample.

    Turns are where "the next sample is higher" changes its answer, so tops and bottoms
    alternate (the first is a top when the envelope starts by rising), and between them the
    envelope is monotone: strictly rising from a bottom (or the start) to the next top, never
    rising from a top to the next bottom (or the end).  The look-ahead's scans use this to find
    where the envelope crosses a level by bisection within a run instead of sample by sample.
    A NaN would break the alternation: then only the tops are given, by their definition.
    """
    if len(f) < 3 or not math.isfinite(float(f.dot(f))):
        tops = ((f[1:-1] > f[:-2]) & (f[1:-1] >= f[2:])).nonzero()[0]
        tops += 1
        return tops, None, False
    up = f[1:] > f[:-1]
    turns = (up[1:] != up[:-1]).nonzero()[0]
    turns += _ONE  # a 0-d intp array: a Python int operand costs ~2k instructions more a ufunc call
    rises_first = bool(up[0])
    return turns[0 if rises_first else 1 :: 2], turns.tolist(), rises_first


def decide(state: DetectorState, upto: int, params: DetectorParams | None = None) -> list[Beat]:
    """The beats decided by the samples before ``upto`` (at most ``next_index``), in order.

    Reads only samples before ``upto``, so it gives exactly what ``process`` would give had the
    samples been fed up to ``upto`` and no further.
    """
    p = params or DetectorParams()
    buf_f, buf_bp = state.buf_f, state.buf_bp
    end = upto
    buf_start = state.next_index - len(buf_f)
    limit = end - buf_start  # the samples ``process`` would have seen
    beats: list[Beat] = []
    lo = max(state.decided_upto, buf_start + 1)  # a candidate needs its left neighbour
    hi = end - state.min_lookahead  # ...and at least the shortest look-ahead
    if hi > lo:
        a = lo - buf_start
        b = hi - buf_start
        f = buf_f.data
        tops, top_values = state.tops, state.top_values
        learn_end = state.start_index + state.learn
        for c in range(bisect_left(tops, a), bisect_left(tops, b)):
            i = tops[c]
            fp = top_values[c]
            win_lo = max(0, i - state.refractory)
            pre = state.precursor - buf_start
            if pre >= win_lo:
                # A precursor set aside must not overshadow the complex it announced: compare
                # only from the trough that separates them.
                win_lo = pre + int(buf_f[pre : i + 1].argmin())
            if _exceeds(f, tops, top_values, win_lo, i + state.min_lookahead, fp):
                continue  # overshadowed whatever the look-ahead: most envelope wiggles end here
            la = _lookahead(state, f, i, fp, learnt=buf_start + i >= learn_end, limit=limit)
            if buf_start + i + la >= end:
                hi = buf_start + i  # its look-ahead has not arrived: resume from it next time
                break
            if _exceeds(f, tops, top_values, win_lo, i + la, fp):
                continue
            end_f = f[i + la]
            if end_f >= p.precursor_ratio * fp and end_f > f[i + la - 1]:
                # The envelope is climbing steeply as the look-ahead ends: another complex is
                # coming, and this was its precursor (a P wave before a QRS, a pacing spike).
                state.precursor = buf_start + i
                continue
            beat = _decide(state, p, buf_start + i, la, fp, buf_f, buf_bp, buf_start, limit)
            if beat is not None:
                beats.append(beat)
        state.decided_upto = hi
    return beats


def _decide(
    state: DetectorState,
    p: DetectorParams,
    peak: int,
    la: int,
    fp: float,
    buf_f: FloatArray,
    buf_bp: FloatArray,
    buf_start: int,
    limit: int,
) -> Beat | None:
    fs = state.design.fs
    learning = peak < state.start_index + state.learn
    if learning:
        # The running maximum up to the end of this candidate's look-ahead: a function of the
        # signal only, not of how it was split into blocks.
        upto = peak + la + 1
        if upto > state.learn_scanned:
            seg = buf_f[max(0, state.learn_scanned - buf_start) : upto - buf_start]
            if len(seg):
                state.learn_max = max(state.learn_max, float(seg.max()))
            state.learn_scanned = upto
        threshold = 0.3 * state.learn_max
    else:
        threshold = state.noise_level + p.threshold_k * (state.signal_level - state.noise_level)

    rr_expected = float(median(state.rr)) if state.rr else p.default_rr_s * fs
    elapsed = peak - state.last_beat if state.last_beat is not None else None
    searched = below_threshold = False

    if elapsed is None:
        is_beat = fp >= state.min_energy and fp > threshold
    elif fp < state.min_energy or elapsed < state.refractory:
        is_beat = False
    elif elapsed < p.t_wave_window_s * fs and fp < p.t_wave_ratio * state.last_beat_energy:
        is_beat = False  # T wave, or the second hump of the same QRS
    elif elapsed > p.searchback_rr * rr_expected:
        is_beat = fp > 0.5 * threshold
        searched = True
    else:
        is_beat = fp > threshold
        below_threshold = True

    if not is_beat:
        # While learning, levels are plain means of what was seen (an exponential average
        # started from zero would under-estimate the noise right when learning ends).
        state.n_noise += 1
        state.noise_energy += fp
        gain = max(p.level_gain, 1.0 / state.n_noise) if learning else p.level_gain
        state.noise_level += gain * (fp - state.noise_level)
        if len(state.rejected) <= _REJECTED_KEPT:  # one over: too many to undo
            state.rejected.append((fp, gain, below_threshold))
        return None

    if learning or state.signal_level <= 0:
        # The largest complex seen so far sets the scale: before the first real QRS, noise peaks
        # pass the provisional threshold, and must not set the level the detector starts with.
        state.signal_level = max(state.signal_level, fp)
    else:
        # Cap one peak's pull on the signal level so a single artefact cannot blind the detector.
        state.signal_level += p.level_gain * (min(fp, 4.0 * state.signal_level) - state.signal_level)
    rejected = state.rejected
    if (
        searched
        and not learning
        and len(rejected) <= _REJECTED_KEPT
        and any(eligible and f >= p.alike_rejected_ratio * fp for f, _, eligible in rejected)
    ):
        # Found by the search-back, and no larger than a candidate rejected since the last beat:
        # those were beats too, of a new, smaller QRS (vfdb 611's VT after its sinus rhythm, a
        # third of its energy).  Counted as noise, each one raised the noise level onto the new
        # QRS, and the detector took one complex in 3 to 5 for 36 s.  The noise level is taken
        # again from the last beat without them (every other update replayed as it was made,
        # T waves and search-back rejections included).  Only candidates nearly as large as this beat:
        # with 0.7 of it, electrode-motion noise at 0 dB gave 5 % more false beats
        # (``bench/ecg_quality.py``), with 0.9 1 %; the RR history is left as it is (giving it
        # the rhythm's interval as well took more false beats in noise, and alone too few of
        # the VT's complexes).
        noise = state.noise_at_beat
        for f, gain, eligible in rejected:
            if not (eligible and f >= p.alike_rejected_ratio * fp):
                noise += gain * (f - noise)
        state.noise_level = noise
    if elapsed is not None:
        state.rr = (*state.rr[-(p.rr_history - 1) :], elapsed)
    state.rejected = []
    state.noise_at_beat = state.noise_level
    state.last_beat = peak
    state.last_beat_energy = fp
    return Beat(_locate_r(state, peak, buf_bp, buf_start, limit), peak + la, fp)


def _lookahead(state: DetectorState, f: memoryview, i: int, fp: float, learnt: bool, limit: int | None = None) -> int:
    """How long to wait after the envelope peak ``f[i]`` before deciding on it.

    Waiting longer only helps to see whether a larger complex follows, so the wait ends as soon
    as the complex is over (its envelope has fallen back), and in any case within the latency
    budgets counted from the rise of the envelope: the R wave lies near that rise, not near the
    envelope peak, which comes late on wide, paced or ventricular complexes.  Reads only samples
    up to ``i`` + the returned look-ahead and decided state, so block splits do not matter: when
    the end of the complex has not arrived yet, the full look-ahead is returned and the caller
    waits for it.  ``f`` is the envelope buffer (a memoryview: its items are Python floats), of
    which only the first ``limit`` samples (all by default) have arrived.
    """
    # Conditional expressions, not min()/max(): the builtins cost ~800 instructions a call here.
    lo = i - state.max_rise if i > state.max_rise else 0
    turns, rises = state.turns, state.rises_first
    k = _last_at_or_below(f, lo, i, 0.5 * fp, turns, rises)
    rise = i - k if k >= 0 else state.max_rise
    # The foot is measured against the learnt QRS level when the candidate is smaller, and never
    # below the noise level: a P wave riding on the previous T wave, or a bump in muscle noise,
    # never falls to a share of its own small peak, would look like a slow rise, and an early
    # decision on it would shadow the QRS that follows.  No foot within max_rise means the
    # envelope never settled (noise, merged complexes): only the half-rise budget applies.
    # While learning, the QRS level is not known yet (the first "beat" may be noise) and the
    # filters' start-up leaves no foot: no early decision.
    foot = 0
    if learnt:
        # max(foot_ratio * max(fp, signal_level), noise_level), the same comparisons
        level = state.foot_ratio * (state.signal_level if state.signal_level > fp else fp)
        level = state.noise_level if state.noise_level > level else level
        k = _last_at_or_below(f, lo, i, level, turns, rises)
        if k >= 0:
            foot = i - k
    # max(min_lookahead, min(lookahead, budget - rise, foot_budget - foot))
    la = state.lookahead if state.lookahead < state.budget - rise else state.budget - rise
    la = la if la < state.foot_budget - foot else state.foot_budget - foot
    la = la if la > state.min_lookahead else state.min_lookahead
    # A candidate as large as the learnt QRS level is a beat unless a larger one overshadows it,
    # and a complex that has halved is over; smaller ones wait for a deeper fall, so a P wave
    # rising into its QRS is not mistaken for a finished complex.
    sure = state.signal_level > 0 and fp >= state.sure_ratio * state.signal_level
    end = (state.sure_end_ratio if sure else state.end_ratio) * fp
    stop = len(f) if limit is None else limit
    stop = i + la + 1 if i + la + 1 < stop else stop
    k = _first_at_or_below(f, i + 1, stop, end, turns, rises)
    if k < 0:
        return la
    return k - i if k - i > state.min_lookahead else state.min_lookahead


def _exceeds(f: memoryview, tops: list[int], top_values: list[float], lo: int, hi: int, level: float) -> bool:
    """Whether some ``f[k] > level`` for ``lo <= k <= hi``, given every local maximum ``tops``
    of ``f`` (``f[t - 1] < f[t] >= f[t + 1]``, ascending) and its value: the largest sample of
    the stretch is at one of its ends or is the first sample of its value, hence a local maximum."""
    if f[lo] > level or f[hi] > level:
        return True
    for v in top_values[bisect_right(tops, lo) : bisect_left(tops, hi)]:  # noqa: SIM110 - no generator per call
        if v > level:
            return True
    return False


def _last_at_or_below(
    f: memoryview, lo: int, hi: int, threshold: float, turns: list[int] | None = None, rises_first: bool = False
) -> int:
    """The last index ``k`` in ``lo <= k < hi`` with ``f[k] <= threshold``, or -1.

    With the envelope's ``turns`` (``_turning_points``), run by run from ``hi`` back: a falling
    run's last sample is its lowest, a rising run is searched by bisection, a few samples read
    instead of every one (the scans cover ~20-30 samples, each a memoryview read and a compare in
    Python).  Without, sample by sample."""
    if turns is None:
        for k in range(hi - 1, lo - 1, -1):
            if f[k] <= threshold:
                return k
        return -1
    while hi > lo:
        k = hi - 1
        j = bisect_right(turns, k) - 1  # the last turn at or before k (-1: none)
        start = turns[j] if j >= 0 else -1
        if (j % 2 == 0) == rises_first:
            # Turn j is a top (or, for j = -1, the envelope starts by falling): never rising from
            # there to k, so f[k] is the run's lowest sample.
            if f[k] <= threshold:
                return k
        else:
            # Strictly rising from turn j, a bottom (or the first sample), to k.
            s = start if start > lo else lo
            if f[s] <= threshold:
                return bisect_right(f, threshold, s, hi) - 1
        if start <= lo:
            return -1
        hi = start  # the run from start to k is all above the threshold
    return -1


def _first_at_or_below(
    f: memoryview, lo: int, hi: int, threshold: float, turns: list[int] | None = None, rises_first: bool = False
) -> int:
    """The first index ``k`` in ``lo <= k < hi`` with ``f[k] <= threshold``, or -1 (the mirror of
    ``_last_at_or_below``: a rising run's first sample is its lowest, a falling run is bisected)."""
    if turns is None:
        for k in range(lo, hi):
            if f[k] <= threshold:
                return k
        return -1
    n = len(turns)
    k = lo
    while k < hi:
        j = bisect_right(turns, k) - 1  # the last turn at or before k (-1: none)
        if (j % 2 == 0) == rises_first:
            # Never rising from k to the next turn, a bottom (or to the end): bisect on -f, sorted.
            e = turns[j + 1] if j + 1 < n and turns[j + 1] < hi else hi - 1
            if f[e] <= threshold:
                return bisect_left(f, -threshold, k, e + 1, key=neg)
            # Past the bottom the envelope rises to the next top: nothing lower before that top.
            if e == hi - 1 or j + 2 >= n:
                return -1
            k = turns[j + 2]
        else:
            # Strictly rising from k to the next turn, a top (or to the end): f[k] is the lowest.
            if f[k] <= threshold:
                return k
            if j + 1 >= n:
                return -1
            k = turns[j + 1]
    return -1


def _locate_r(state: DetectorState, peak: int, buf_bp: FloatArray, buf_start: int, limit: int) -> int:
    """The R wave: the largest band-passed deflection around where the envelope says the QRS is,
    among the first ``limit`` samples of ``buf_bp`` (those that have arrived)."""
    d = state.design
    half = round(0.06 * d.fs)
    centre = peak - d.feature_delay + d.bp_delay
    lo = max(centre - half - buf_start, 0)
    hi = min(centre + half + 1 - buf_start, limit)
    if hi <= lo:
        return peak - d.feature_delay
    j = lo + int(np.abs(buf_bp[lo:hi]).argmax())
    return buf_start + j - d.bp_delay


class RPeakDetector:
    """Convenience wrapper: one detector per ECG channel, fed with consecutive sample blocks."""

    def __init__(self, fs: float, params: DetectorParams | None = None, first_index: int = 0) -> None:
        self.params = params or DetectorParams()
        self.fs = fs
        self.state = new_state(fs, self.params, first_index)

    def feed(self, samples_mv: FloatArray, first_index: int | None = None) -> list[Beat]:
        """Process the next block; a ``first_index`` that does not follow on restarts the detector."""
        if first_index is not None and first_index != self.state.next_index:
            restart(self.state, first_index)
        x = np.asarray(samples_mv, dtype=np.float64)
        if x.ndim != 1 or not all_finite(x):
            # A NaN would poison the filter state for good: refuse the block, the caller restarts.
            raise ValueError("ECG samples must be a 1-D array of finite values")
        return process(self.state, x, self.params)


def detect_all(signal_mv: FloatArray, fs: float, params: DetectorParams | None = None) -> list[Beat]:
    """Batch convenience: the whole signal as one block (same result as any streaming split)."""
    return RPeakDetector(fs, params).feed(signal_mv)
