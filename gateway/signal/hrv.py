"""Short-term time-domain HRV (SDNN, RMSSD) over a sliding time window of NN intervals.

Only normal-to-normal intervals count (Task Force of the ESC/NASPE, 1996): an ectopic beat's
short-long pair would otherwise dominate both measures, and the "beats" of a VF, VT or asystole
episode are none: the ECG channel leaves them out and starts HRV over at the episode's alarm
(``restart``).  RMSSD uses successive differences only
between intervals that are adjacent in the recording, never across a dropped ectopic or a gap.
Memory is bounded by the window: at most ``window_s / MIN_RR_S`` intervals are kept.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from gateway.signal.heart_rate import MIN_RR_S, RRInterval


@dataclass(frozen=True, slots=True)
class HrvValues:
    time: float
    sdnn_ms: float
    rmssd_ms: float
    n_intervals: int


@dataclass(slots=True)
class HrvState:
    window_s: float = 300.0
    min_intervals: int = 20
    # (time, rr_ms, adjacent_to_previous_kept_interval)
    intervals: deque[tuple[float, float, bool]] = field(default_factory=deque)
    previous_was_normal: bool = False


def add_interval(state: HrvState, rr: RRInterval) -> None:
    if rr.normal:
        state.intervals.append((rr.time, rr.rr_ms, state.previous_was_normal))
    state.previous_was_normal = rr.normal
    horizon = rr.time - state.window_s
    while state.intervals and state.intervals[0][0] < horizon:
        state.intervals.popleft()
    cap = int(state.window_s / MIN_RR_S) + 1
    while len(state.intervals) > cap:  # a wrong clock must not grow the window without bound
        state.intervals.popleft()


def restart(state: HrvState) -> None:
    """Forget every interval: a lethal rhythm (VF, VT, asystole) has begun.  The intervals before it
    describe another rhythm, and those since its onset are none (VF's "beats"); HRV comes back
    once ``min_intervals`` NN intervals have followed the episode."""
    state.intervals.clear()
    state.previous_was_normal = False


def break_sequence(state: HrvState) -> None:
    """The next interval does not follow the last one (gap, reset): no successive difference."""
    state.previous_was_normal = False


def values(state: HrvState, now: float) -> HrvValues | None:
    """SDNN and RMSSD of the window ending at ``now``; None with too few intervals."""
    kept = [(t, rr, adj) for t, rr, adj in state.intervals if t >= now - state.window_s]
    if len(kept) < state.min_intervals:
        return None
    rrs = [rr for _, rr, _ in kept]
    mean = sum(rrs) / len(rrs)
    sdnn = math.sqrt(sum((x - mean) ** 2 for x in rrs) / (len(rrs) - 1))
    diffs = [kept[i][1] - kept[i - 1][1] for i in range(1, len(kept)) if kept[i][2]]
    rmssd = math.sqrt(sum(d * d for d in diffs) / len(diffs)) if diffs else float("nan")
    if math.isnan(rmssd):
        return None
    return HrvValues(time=now, sdnn_ms=sdnn, rmssd_ms=rmssd, n_intervals=len(rrs))
