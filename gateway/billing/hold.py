"""Readings received while the host clock is not synchronised, held until they can be dated.

A Raspberry Pi without an RTC boots at 1970 (or at the last saved time) and jumps when NTP answers.
A reading stamped in between carries a wrong wall-clock time, but the *monotonic* clock was right all
along: once the wall clock is trustworthy, ``true time = now - (monotonic now - monotonic then)``.

Readings are held as spans (consecutive readings of one device a few minutes apart at most), so a
day-long outage costs a few hundred entries, not one per reading; the hold is bounded, oldest spans
go first.  The hold lives in memory: the monotonic clock restarts with the host, so a span held across
a reboot could not be dated anyway.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# Readings this close (monotonic seconds) join one span, and a span never grows longer than
# ``_SPAN_MAX_S``: this bounds how far a held reading's date can be off — only a span straddling
# midnight splits its count approximately (first reading on one side, the rest on the other).
_JOIN_GAP_S = 120.0
_SPAN_MAX_S = 600.0


@dataclass(slots=True)
class HeldSpan:
    patient: str
    mono_first: float
    mono_last: float
    device: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class DatedSpan:
    """A held span with trustworthy wall-clock times."""

    patient: str
    first: float
    last: float
    device: str
    count: int


class UnsyncedHold:
    def __init__(self, max_spans: int) -> None:
        self._spans: deque[HeldSpan] = deque()
        self._open: dict[tuple[str, str], HeldSpan] = {}
        self._max = max_spans
        self.dropped_readings = 0

    def __len__(self) -> int:
        return len(self._spans)

    def held_readings(self, patient: str | None = None) -> int:
        return sum(s.count for s in self._spans if patient is None or s.patient == patient)

    def add(self, patient: str, device: str, mono: float) -> None:
        """Hold one reading taken at monotonic time ``mono``."""
        span = self._open.get((patient, device))
        if span is not None and 0 <= mono - span.mono_last <= _JOIN_GAP_S and mono - span.mono_first <= _SPAN_MAX_S:
            span.mono_last = mono
            span.count += 1
            return
        span = HeldSpan(patient, mono, mono, device)
        self._spans.append(span)
        self._open[(patient, device)] = span
        while len(self._spans) > self._max:
            old = self._spans.popleft()
            self.dropped_readings += old.count
            if self._open.get((old.patient, old.device)) is old:
                del self._open[(old.patient, old.device)]

    def release(self, wall_now: float, mono_now: float) -> list[DatedSpan]:
        """Date every held span against a trustworthy wall clock and empty the hold."""
        offset = wall_now - mono_now
        out = [
            DatedSpan(s.patient, s.mono_first + offset, s.mono_last + offset, s.device, s.count) for s in self._spans
        ]
        self._spans.clear()
        self._open.clear()
        return out
