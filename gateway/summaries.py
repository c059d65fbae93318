"""Periodic per-vital summaries (min/mean/max, counts, quality): what goes upstream instead of raw data.

Periods are aligned to multiples of ``period_s`` since the Unix epoch, so two gateways (or a restart)
cut the same periods.  A period closes when a later reading arrives or when ``flush`` passes its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gateway.records import Vital


@dataclass(frozen=True, slots=True)
class VitalSummary:
    vital: Vital
    unit: str
    period_start: float
    period_end: float
    count: int
    rejected: int
    min: float | None
    mean: float | None
    max: float | None
    quality: float
    devices: tuple[str, ...]


@dataclass(slots=True)
class _Acc:
    start: float
    unit: str
    count: int = 0
    rejected: int = 0
    total: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    devices: set[str] = field(default_factory=set)


class SummaryAggregator:
    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._acc: dict[Vital, _Acc] = {}

    def _period_start(self, t: float) -> float:
        return math.floor(t / self.period_s) * self.period_s

    def add(
        self, vital: Vital, value: float | None, unit: str, t: float, device: str, valid: bool
    ) -> list[VitalSummary]:
        """Account one reading; returns the summary of a period this reading closed, if any."""
        start = self._period_start(t)
        out: list[VitalSummary] = []
        acc = self._acc.get(vital)
        if acc is not None and start > acc.start:
            out.append(self._close(vital, acc, acc.start + self.period_s))
            acc = None
        if acc is None:
            acc = self._acc[vital] = _Acc(start=start, unit=unit)
        # A late reading from an earlier period (e.g. a buffered spot check) counts in the current one.
        acc.devices.add(device)
        if valid and value is not None:
            acc.count += 1
            acc.total += value
            acc.lo = min(acc.lo, value)
            acc.hi = max(acc.hi, value)
        else:
            acc.rejected += 1
        return out

    def flush(self, now: float, *, partial: bool = False) -> list[VitalSummary]:
        """Close every period that has ended by ``now`` (all of them when ``partial``, at shutdown)."""
        out = []
        for vital, acc in list(self._acc.items()):
            end = acc.start + self.period_s
            if end <= now or partial:
                out.append(self._close(vital, acc, min(end, max(now, acc.start))))
        return out

    def close_device(self, device: str) -> list[VitalSummary]:
        """Close now the open periods that hold values of ``device``: its values must be on their
        way upstream before the device is told they were taken (see ``DeviceContext.checkpoint``).
        Later values of the same period make a second summary of that period."""
        return [
            self._close(vital, acc, acc.start + self.period_s)
            for vital, acc in list(self._acc.items())
            if device in acc.devices
        ]

    def snapshot(self) -> list[dict[str, Any]]:
        """Open periods, so a restart resumes them instead of losing their values."""
        return [
            {
                "vital": v.value,
                "start": a.start,
                "unit": a.unit,
                "count": a.count,
                "rejected": a.rejected,
                "total": a.total,
                "lo": a.lo if a.count else None,
                "hi": a.hi if a.count else None,
                "devices": sorted(a.devices),
            }
            for v, a in self._acc.items()
        ]

    def restore(self, snap: list[dict[str, Any]]) -> None:
        for item in snap:
            count = int(item["count"])
            self._acc[Vital(item["vital"])] = _Acc(
                start=float(item["start"]),
                unit=str(item["unit"]),
                count=count,
                rejected=int(item["rejected"]),
                total=float(item["total"]),
                lo=float(item["lo"]) if count else math.inf,
                hi=float(item["hi"]) if count else -math.inf,
                devices=set(item["devices"]),
            )

    def _close(self, vital: Vital, acc: _Acc, end: float) -> VitalSummary:
        del self._acc[vital]
        n = acc.count
        total = n + acc.rejected
        return VitalSummary(
            vital=vital,
            unit=acc.unit,
            period_start=acc.start,
            period_end=end,
            count=n,
            rejected=acc.rejected,
            min=acc.lo if n else None,
            mean=acc.total / n if n else None,
            max=acc.hi if n else None,
            quality=n / total if total else 0.0,
            devices=tuple(sorted(acc.devices)),
        )
