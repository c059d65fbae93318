"""Heart rate and RR intervals from detected beats, robust to ectopic beats.

The rate is 60 / median of the last few RR intervals: one premature beat and its compensatory
pause shift a mean but not a median.  Each RR interval is also marked normal-to-normal (NN) or
not, by comparison with that running median, so HRV can leave ectopics out.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.frozen_init import fast_init
from gateway.signal.small_stats import median

MIN_RR_S = 0.17  # 350 /min: anything shorter is a double detection, not a heart
MAX_RR_S = 4.0  # 15 /min: the lowest rate reported (the pipeline's plausibility floor)


@fast_init  # one per heartbeat
@dataclass(frozen=True, slots=True)
class RRInterval:
    end_index: int  # sample index of the beat that closes the interval
    time: float  # Unix seconds of that beat
    rr_ms: float
    normal: bool  # within ``nn_tolerance`` of the running median: usable for HRV
    heart_rate: float | None  # /min, median-based; None until enough intervals are seen


@dataclass(slots=True)
class HeartRateState:
    fs: float
    window: int = 8  # RR intervals in the running median (even: bigeminy reads as the mean rate)
    nn_tolerance: float = 0.2
    min_intervals: int = 3
    last_index: int | None = None
    recent_rr: tuple[float, ...] = ()  # seconds, newest last, at most ``window``


def add_beat(state: HeartRateState, index: int, time: float) -> RRInterval | None:
    """Record a beat; returns the RR interval it closes, or None (first beat, double detection)."""
    prev, state.last_index = state.last_index, index
    if prev is None:
        return None
    rr = (index - prev) / state.fs
    if rr < MIN_RR_S:
        return None  # a double detection, not a heart period: the rate is not touched
    ref = median(state.recent_rr) if state.recent_rr else rr
    normal = rr <= MAX_RR_S and abs(rr - ref) <= state.nn_tolerance * ref
    # A pause longer than MAX_RR_S is real (gaps and signal loss restart this state upstream):
    # it enters the median as MAX_RR_S, so the rate reads as the lowest reportable one.
    state.recent_rr = (*state.recent_rr[-(state.window - 1) :], min(rr, MAX_RR_S))
    hr = 60.0 / median(state.recent_rr) if len(state.recent_rr) >= state.min_intervals else None
    # Positional: keywords cost ~2.4k instructions more a beat through the generated __init__.
    return RRInterval(index, time, rr * 1000.0, normal, hr)


def reset(state: HeartRateState) -> None:
    """Forget the rhythm (after a gap in the samples or a long invalid-ECG spell)."""
    state.last_index = None
    state.recent_rr = ()


def silence_rate(state: HeartRateState, silent_s: float) -> float | None:
    """The rate that ``silent_s`` seconds without a beat imply, once the silence is overdue: half
    as long again as the recent rhythm (within 2-3 s), and in any case after 3 s (20 /min); None
    before.  A real pause or asystole on a valid signal then drives the low-rate alarm.  Floored
    at the lowest rate reported: a standstill must read as a very low rate, not as an invalid one."""
    recent = state.recent_rr
    limit = min(3.0, max(2.0, 1.5 * median(recent))) if recent else 3.0
    if silent_s <= limit:
        return None
    return max(60.0 / MAX_RR_S, 60.0 / silent_s)
