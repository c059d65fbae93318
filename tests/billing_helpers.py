"""Helpers shared by the billing tests: readable times and a book fed from ISO strings."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.billing.book import PatientBook
from gateway.config.billing import BillingSection
from gateway.records import BillingRecord, BillingStatus, ClockQuality

CHICAGO = ZoneInfo("America/Chicago")


def ts(iso: str) -> float:
    """Unix time of an ISO 8601 string that carries its offset."""
    dt = datetime.fromisoformat(iso)
    assert dt.tzinfo is not None, iso
    return dt.timestamp()


def local_noon(d: date, tz: ZoneInfo = CHICAGO) -> float:
    return datetime(d.year, d.month, d.day, 12, tzinfo=tz).timestamp()


def book(cfg: BillingSection | None = None, *, tz: ZoneInfo = CHICAGO, **kw: object) -> PatientBook:
    return PatientBook("p1", cfg or BillingSection(), gateway_id="gw1", tz=tz, **kw)  # type: ignore[arg-type]


def feed_days(b: PatientBook, first: date, offsets: list[int], device: str = "ox1") -> list[BillingRecord]:
    out: list[BillingRecord] = []
    for k in offsets:
        out.extend(b.observe(device, local_noon(first + timedelta(days=k), b.tz), ClockQuality.SYNCED).records)
    return out


def close_all(b: PatientBook) -> list[BillingRecord]:
    return b.close_due(float("inf"))


def brief(records: list[BillingRecord]) -> list[tuple[str, str, int, str]]:
    """(code, status, version, period_start) per record, in emission order."""
    return [(r.code, r.status.value, r.version, r.period_start) for r in records]


def final(records: list[BillingRecord]) -> dict[str, BillingRecord]:
    """The last version of each service key."""
    last: dict[str, BillingRecord] = {}
    for r in records:
        if r.service_key not in last or last[r.service_key].version < r.version:
            last[r.service_key] = r
    return last


def billable_supply(records: list[BillingRecord], cfg: BillingSection) -> list[BillingRecord]:
    codes = {t.code for t in cfg.supply_tiers}
    return [r for r in final(records).values() if r.code in codes and r.status is BillingStatus.BILLABLE]
