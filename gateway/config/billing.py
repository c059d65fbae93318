"""Config section for Remote Patient Monitoring billing rules (defaults: US Medicare 2026).

Codes, thresholds and period rules live here as data, not in the ledger's code: payers and years differ.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SupplyTier(_Model):
    code: str
    min_days: int = Field(ge=1, le=31)
    max_days: int = Field(ge=1, le=31)


class BillingSection(_Model):
    enabled: bool = True
    period_days: int = Field(30, ge=1, le=31, description="Device-supply period length")
    period_anchor: Literal["first_data", "enrolment"] = Field(
        "first_data", description="Periods roll from the first day of data, or from the enrolment date"
    )
    setup_code: str = "99453"
    setup_min_days: int = Field(1, ge=1, le=31, description="Days of data before the set-up record is emitted")
    supply_tiers: list[SupplyTier] = Field(
        default_factory=lambda: [
            SupplyTier(code="99454", min_days=16, max_days=30),
            SupplyTier(code="99445", min_days=2, max_days=15),
        ],
        description="Device-supply codes by qualifying days per period (one per patient per period)",
    )
    eligible_at_days: int = Field(16, ge=1, le=31, description="Emit an 'eligible' record on reaching this day")

    @model_validator(mode="after")
    def _tiers_disjoint(self) -> BillingSection:
        spans = sorted((t.min_days, t.max_days, t.code) for t in self.supply_tiers)
        for lo, hi, code in spans:
            if lo > hi:
                raise ValueError(f"supply tier {code}: min_days {lo} > max_days {hi}")
        for (_, hi1, c1), (lo2, _, c2) in zip(spans, spans[1:], strict=False):
            if lo2 <= hi1:
                raise ValueError(f"supply tiers {c1} and {c2} overlap: a period must map to one code")
        return self
