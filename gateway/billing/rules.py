"""Service codes and their statuses, from the config's tables (no code or threshold is written here)."""

from __future__ import annotations

from gateway.config.billing import BillingSection, SupplyTier
from gateway.records import BillingStatus


def service_key(patient: str, code: str, period_start: str) -> str:
    """Deterministic identity of one billable service: same patient, code and period → same key.

    Readable on purpose (``rpm:p17:99454:2026-03-01``): billing staff read it in audit logs.  Patient
    ids cannot contain ':' (config pattern), so the key cannot be ambiguous.
    """
    return f"rpm:{patient}:{code}:{period_start}"


def record_key(service: str, version: int) -> str:
    return f"{service}:v{version}"


def tier_for(days: int, cfg: BillingSection) -> SupplyTier | None:
    """The device-supply tier a period with ``days`` qualifying days maps to (None below the lowest)."""
    for tier in cfg.supply_tiers:
        if tier.min_days <= days <= tier.max_days:
            return tier
    return None


def is_final_tier(tier: SupplyTier, cfg: BillingSection) -> bool:
    """No higher tier can still be reached within a period: the service may be settled early."""
    return not any(t.min_days > tier.max_days and t.min_days <= cfg.period_days for t in cfg.supply_tiers)


def open_status(days: int, tier: SupplyTier, cfg: BillingSection) -> BillingStatus:
    """Status of a supply service while its period is still open."""
    if days >= cfg.eligible_at_days and is_final_tier(tier, cfg):
        return BillingStatus.ELIGIBLE
    return BillingStatus.ACCRUING
