"""Days of data: cutting reading times into local calendar days, and the evidence kept per day.

A day counts for a patient when at least one valid reading from an assigned device was accepted for
transmission on that calendar date in the patient's time zone.  Per day we keep what an auditor asks
for: how many readings, from which devices, the first and last reading time, and how the clock that
dated them could be trusted.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.records import ClockQuality, DayEvidence

# Order of trust, best first: the envelope of a record carries the worst flag of its evidence.
_TRUST = (ClockQuality.SYNCED, ClockQuality.CORRECTED, ClockQuality.DEVICE, ClockQuality.UNSYNCED)


def host_zone() -> ZoneInfo:
    """The host's IANA zone (``TZ``, ``/etc/timezone``, or the ``/etc/localtime`` link); UTC if unknown.

    ``datetime.astimezone()`` would give a fixed offset, which is wrong on the other side of a DST change.
    """
    candidates: list[str] = []
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        candidates.append(tz_env)
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def local_date(t: float, tz: ZoneInfo) -> date:
    """The calendar date of Unix time ``t`` in zone ``tz``."""
    return datetime.fromtimestamp(t, tz=tz).date()


def day_start(d: date, tz: ZoneInfo) -> float:
    """Unix time of the first instant of local date ``d`` (midnight, or the first valid time after a gap)."""
    naive = datetime.combine(d, time(0))
    aware = naive.replace(tzinfo=tz)
    # A midnight that does not exist (DST jump at 00:00) normalises forward through UTC.
    return aware.astimezone(UTC).timestamp()


def day_end(d: date, tz: ZoneInfo) -> float:
    """Unix time at which local date ``d`` ends (the next day's start)."""
    return day_start(d + timedelta(days=1), tz)


def worst_clock(flags: set[ClockQuality] | list[ClockQuality]) -> ClockQuality:
    for q in reversed(_TRUST):
        if q in flags:
            return q
    return ClockQuality.SYNCED


@dataclass(slots=True)
class DayTally:
    """Evidence of one local day for one patient."""

    day: date
    readings: int = 0
    first: float = float("inf")
    last: float = float("-inf")
    devices: set[str] = field(default_factory=set)
    clock_flags: set[ClockQuality] = field(default_factory=set)

    def add(self, t: float, device: str, clock: ClockQuality, count: int = 1) -> None:
        self.readings += count
        self.first = min(self.first, t)
        self.last = max(self.last, t)
        self.devices.add(device)
        self.clock_flags.add(clock)

    def evidence(self) -> DayEvidence:
        return DayEvidence(
            date=self.day.isoformat(),
            readings=self.readings,
            first=datetime.fromtimestamp(self.first, tz=UTC),
            last=datetime.fromtimestamp(self.last, tz=UTC),
            devices=sorted(self.devices),
            clock_flags=[q for q in _TRUST if q in self.clock_flags],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "readings": self.readings,
            "first": self.first,
            "last": self.last,
            "devices": sorted(self.devices),
            "clock": sorted(q.value for q in self.clock_flags),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DayTally:
        return cls(
            day=date.fromisoformat(obj["day"]),
            readings=int(obj["readings"]),
            first=float(obj["first"]),
            last=float(obj["last"]),
            devices=set(obj["devices"]),
            clock_flags={ClockQuality(q) for q in obj["clock"]},
        )
