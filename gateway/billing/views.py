"""What the billing CLI shows per patient: the current period, its days, and what it will bill."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.billing.book import ClosedPeriod, PatientBook
from gateway.billing.rules import tier_for
from gateway.records import BillingStatus


@dataclass(frozen=True)
class PatientBillingView:
    patient: str
    timezone: str
    period_start: str | None
    period_end: str | None
    days_counted: int
    dates: list[str]
    projected_code: str | None  # what the current period bills if it closed with today's count
    status: BillingStatus | None  # status of that service as last sent upstream
    setup_sent: bool
    history: list[ClosedPeriod] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    held_readings: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "timezone": self.timezone,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "days_counted": self.days_counted,
            "dates": self.dates,
            "projected_code": self.projected_code,
            "status": None if self.status is None else self.status.value,
            "setup_sent": self.setup_sent,
            "history": [
                {"start": h.period.start.isoformat(), "end": h.period.end.isoformat(), "days": h.days, "code": h.code}
                for h in self.history
            ],
            "counters": self.counters,
            "held_readings": self.held_readings,
        }


def view_of(book: PatientBook, *, held: int = 0) -> PatientBillingView:
    op = book.current
    days = sorted(op.days) if op else []
    tier = tier_for(len(days), book.cfg)
    status = None
    if op is not None and tier is not None and tier.code in op.services:
        status = op.services[tier.code].status
    return PatientBillingView(
        patient=book.patient,
        timezone=book.tz.key,
        period_start=op.period.start.isoformat() if op else None,
        period_end=op.period.end.isoformat() if op else None,
        days_counted=len(days),
        dates=[d.isoformat() for d in days],
        projected_code=tier.code if tier else None,
        status=status,
        setup_sent=book.setup is not None,
        history=list(book.history),
        counters=dict(book.counters),
        held_readings=held,
    )
