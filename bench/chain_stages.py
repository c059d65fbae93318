"""Per-stage CPU time of the ECG channel, for ``bench/ecg_speed.py --chain``.

Each stage's entry points are wrapped (only while ``StageClock.installed()`` is active) with a
clock; a stage's time excludes the stages it calls (the VF detector calls the rhythm monitor's
organised-rhythm check, the channel's beat handling calls the rhythm monitor), so the stage times
add up, and what the channel spends outside every stage is its plumbing.  The clock is
``perf_counter_ns`` (~50 ns a read): the thread CPU clock is a system call here, a few
microseconds under a hypervisor, which at ~9 timed calls per second of ECG swelled the stages it
measured.  Shares of the run are taken from this clock; the caller scales them to CPU time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from gateway.signal import ecg_quality, rpeak_detector
from gateway.signal.ecg_channel import EcgChannel
from gateway.signal.ecg_rhythm import RhythmMonitor
from gateway.signal.vf_detector import VfDetector

DETECTOR = "R-peak detector"
QUALITY = "quality index"
VF = "VF/flutter detector"
RHYTHM = "rhythm monitor (asystole, organised)"
BEATS = "beats -> HR/RR/HRV, readings, validity"
STAGES = (DETECTOR, QUALITY, VF, RHYTHM, BEATS)

# (owner, attribute, stage): every entry point the channel goes through.
_ENTRY_POINTS: tuple[tuple[Any, str, str], ...] = (
    (rpeak_detector, "extend", DETECTOR),
    (rpeak_detector, "decide", DETECTOR),
    (ecg_quality, "feed", QUALITY),
    (VfDetector, "feed", VF),
    (RhythmMonitor, "feed", RHYTHM),
    (RhythmMonitor, "beat", RHYTHM),
    (RhythmMonitor, "quality", RHYTHM),
    (RhythmMonitor, "_organised", RHYTHM),
    (EcgChannel, "_beat", BEATS),
    (EcgChannel, "_judge", BEATS),
)


class StageClock:
    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self.calls = 0
        self._children: list[int] = []  # CPU time of the timed callees of each open call

    @property
    def seconds(self) -> dict[str, float]:
        return {k: v / 1e9 for k, v in self.ns.items()}

    def _wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.perf_counter_ns
        children = self._children

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            children.append(0)
            try:
                return fn(*args, **kwargs)
            finally:
                spent = clock() - t0
                inner = children.pop()
                self.ns[stage] = self.ns.get(stage, 0) + spent - inner
                self.calls += 1
                if children:
                    children[-1] += spent

        return timed

    @contextmanager
    def installed(self) -> Iterator[StageClock]:
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in _ENTRY_POINTS]
        try:
            for (owner, name, stage), (_, _, fn) in zip(_ENTRY_POINTS, saved, strict=True):
                setattr(owner, name, self._wrap(stage, fn))
            yield self
        finally:
            for owner, name, fn in saved:
                setattr(owner, name, fn)
