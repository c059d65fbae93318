"""SpO2 clean-up: drop what the device or physiology says is wrong, then smooth, fast enough to
show a real desaturation.

Per reading, in order:

1. **Device status** — sensor off/fault, artifact, out of track, searching and low perfusion mean
   the oximeter itself does not stand behind the number: rejected, and the smoothing restarts
   when good values return (no averaging across a probe-off spell).
2. **Plausibility** — outside 40-100 % (the pipeline's plausible range) is a decoding or sensor
   error.  Below 50 % an oximeter is seldom calibrated, but such a reading is the most critical
   desaturation there is: it is not thrown away.
3. **Jumps** — a value more than ``max_jump`` points away from the recent median is held, not
   used; it is taken (with the values held since) once ``confirm`` consecutive readings are all
   that far on the same side.  A motion spike lasts one or two readings; a true desaturation
   persists, falling or noisy as it may be (they need not agree with each other: a fall of 2
   points a second, or a plateau of 80 +- 4, is confirmed as surely as a step).  The hold costs
   at most ``confirm`` readings of delay.
4. **Smoothing** — running median of the last ``median_s`` seconds (kills single-sample
   outliers), then an exponential filter with time constant ``tau_s`` (irregular sampling
   handled: the weight depends on the time step).

With the defaults (5 s median, 3 s time constant, jump confirmation of 3 readings) a 4-point
drop sustained 10 s shows in the output within about 9 s of its onset at 1 Hz (the test checks
15 s).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from statistics import median

from gateway.readings import INVALIDATING_FLAGS, DeviceFlag


class Spo2Verdict(enum.StrEnum):
    ACCEPTED = "accepted"
    HELD = "held"  # a jump awaiting confirmation
    REJECTED_FLAG = "rejected_flag"
    REJECTED_MISSING = "rejected_missing"
    REJECTED_IMPLAUSIBLE = "rejected_implausible"
    REJECTED_JUMP = "rejected_jump"  # a held jump that was not confirmed


# What the pipeline takes as invalid on any vital, and low perfusion, under which an oximeter's
# SpO2 is known to read wrong.
REJECTING_FLAGS = INVALIDATING_FLAGS | {DeviceFlag.LOW_PERFUSION}


# After these the next value is a fresh start, not a continuation to be averaged with the past.
PROBE_OFF_FLAGS = frozenset({DeviceFlag.SENSOR_OFF, DeviceFlag.SENSOR_FAULT})


@dataclass(frozen=True, slots=True)
class Spo2Params:
    low: float = 40.0
    high: float = 100.0
    max_jump: float = 4.0
    confirm: int = 3
    median_s: float = 5.0
    tau_s: float = 3.0
    restart_after_s: float = 30.0  # this long without an accepted value restarts the smoothing


@dataclass(frozen=True, slots=True)
class Spo2Output:
    time: float
    raw: float | None
    verdict: Spo2Verdict
    smoothed: float | None  # None while the filter has no accepted value


@dataclass(slots=True)
class Spo2State:
    params: Spo2Params = field(default_factory=Spo2Params)
    recent: deque[tuple[float, float]] = field(default_factory=deque)  # accepted (time, value)
    held: list[tuple[float, float]] = field(default_factory=list)
    smoothed: float | None = None
    last_time: float | None = None  # of the last accepted value
    counts: dict[Spo2Verdict, int] = field(default_factory=dict)


def restart(state: Spo2State) -> None:
    state.recent.clear()
    state.held.clear()
    state.smoothed = None
    state.last_time = None


def feed(state: Spo2State, time: float, value: float | None, flags: frozenset[DeviceFlag]) -> list[Spo2Output]:
    """Process one reading; returns one output per reading it settles (held ones settle later)."""
    p = state.params
    if state.last_time is not None and time - state.last_time > p.restart_after_s:
        restart(state)
    if flags & REJECTING_FLAGS or value is None or not math.isfinite(value):
        verdict = Spo2Verdict.REJECTED_FLAG if flags & REJECTING_FLAGS else Spo2Verdict.REJECTED_MISSING
        out = [*_drop_held(state), _out(state, time, value, verdict)]
        if flags & PROBE_OFF_FLAGS:
            restart(state)
        return out
    if not p.low <= value <= p.high:
        return [_out(state, time, value, Spo2Verdict.REJECTED_IMPLAUSIBLE)]

    ref = median(v for _, v in state.recent) if state.recent else None
    if state.held:
        level = median(v for _, v in state.held)
        if ref is not None and abs(value - ref) > p.max_jump and (value - ref) * (level - ref) > 0:
            state.held.append((time, value))
            if len(state.held) < p.confirm:
                return [_out(state, time, value, Spo2Verdict.HELD)]
            # Confirmed: the new level is real.  Take the held values, oldest first.
            taken, state.held = state.held, []
            state.recent.clear()
            return [_accept(state, t, v) for t, v in taken]
        out = _drop_held(state)
        if ref is not None and abs(value - ref) > p.max_jump:
            state.held.append((time, value))
            return [*out, _out(state, time, value, Spo2Verdict.HELD)]
        return [*out, _accept(state, time, value)]
    if ref is not None and abs(value - ref) > p.max_jump:
        state.held.append((time, value))
        return [_out(state, time, value, Spo2Verdict.HELD)]
    return [_accept(state, time, value)]


def settle(state: Spo2State) -> list[Spo2Output]:
    """End of stream: held jumps were never confirmed and are rejected."""
    return _drop_held(state)


def _drop_held(state: Spo2State) -> list[Spo2Output]:
    out = [_out(state, t, v, Spo2Verdict.REJECTED_JUMP) for t, v in state.held]
    state.held.clear()
    return out


def _accept(state: Spo2State, time: float, value: float) -> Spo2Output:
    p = state.params
    state.recent.append((time, value))
    while state.recent and state.recent[0][0] <= time - p.median_s:
        state.recent.popleft()
    med = median(v for _, v in state.recent)
    if state.smoothed is None or state.last_time is None:
        state.smoothed = med
    else:
        dt = max(0.0, time - state.last_time)
        alpha = 1.0 - math.exp(-dt / p.tau_s)
        state.smoothed += alpha * (med - state.smoothed)
    state.last_time = time
    return _out(state, time, value, Spo2Verdict.ACCEPTED)


def _out(state: Spo2State, time: float, value: float | None, verdict: Spo2Verdict) -> Spo2Output:
    state.counts[verdict] = state.counts.get(verdict, 0) + 1
    return Spo2Output(time=time, raw=value, verdict=verdict, smoothed=state.smoothed)
