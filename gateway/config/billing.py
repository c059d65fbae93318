"""Config section for Remote Patient Monitoring billing rules (defaults: US Medicare 2026).

Codes, thresholds and period rules live here as data, not in the ledger's code: payers and years differ.
"""

from __future__ import annotations

import itertools
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config.zones import ZoneName


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
        "first_data",
        description="first_data: a period starts on the first day of data not covered by the previous one; "
        "enrolment: back-to-back periods from the patient's enrolment date (see 'enrolment')",
    )
    enrolment: dict[str, date] = Field(
        default_factory=dict,
        description="Enrolment date per patient id; needed by period_anchor 'enrolment' "
        "(a patient without one falls back to first data)",
    )
    timezone: ZoneName | None = Field(
        None, description="IANA zone cutting billing days for patients without their own; default: the host's"
    )
    setup_code: str | None = Field("99453", description="Set-up service code; null disables set-up records")
    setup_min_days: int = Field(
        2,
        ge=1,
        le=31,
        description="Days of data before the set-up record is emitted: 2 under the CY2026 Medicare rule "
        "(the device-supply minimum), 16 for payers still on the older rule",
    )
    supply_tiers: list[SupplyTier] = Field(
        default_factory=lambda: [
            SupplyTier(code="99454", min_days=16, max_days=30),
            SupplyTier(code="99445", min_days=2, max_days=15),
        ],
        description="Device-supply codes by qualifying days per period (one per patient per period)",
    )
    eligible_at_days: int = Field(16, ge=1, le=31, description="Emit an 'eligible' record on reaching this day")
    close_grace_s: float = Field(
        3600.0,
        ge=0,
        le=7 * 86400,
        description="A period closes this long after its last local midnight, so late-arriving readings "
        "of its last day still count",
    )
    pre_monitoring_s: float = Field(
        3600.0,
        ge=0,
        le=30 * 86400,
        description="A device's stored readings count as days of data from this long before the patient's "
        "first reading reached this hub (the set-up visit) on; older ones, such as a meter's memory of "
        "the months before, were not remote monitoring",
    )
    persist_interval_s: float = Field(
        5.0, gt=0, le=600, description="Reading counters of an already counted day are saved at most this often"
    )
    max_future_s: float = Field(
        300.0, gt=0, description="Readings dated further ahead of a synchronised host clock are refused"
    )
    unsynced_hold_max: int = Field(
        10_000, ge=1, description="Spans of readings held while the clock is unsynchronised (oldest dropped)"
    )
    history_periods: int = Field(13, ge=0, le=1000, description="Closed periods kept for the billing CLI")

    @model_validator(mode="after")
    def _tiers_disjoint(self) -> BillingSection:
        spans = sorted((t.min_days, t.max_days, t.code) for t in self.supply_tiers)
        for lo, hi, code in spans:
            if lo > hi:
                raise ValueError(f"supply tier {code}: min_days {lo} > max_days {hi}")
        for (_, hi1, c1), (lo2, _, c2) in itertools.pairwise(spans):
            if lo2 <= hi1:
                raise ValueError(f"supply tiers {c1} and {c2} overlap: a period must map to one code")
        if len({c for _, _, c in spans}) != len(spans) or self.setup_code in {c for _, _, c in spans}:
            raise ValueError("supply tier codes must differ from each other and from the set-up code")
        if spans and spans[-1][1] < self.period_days:
            # Otherwise a fully monitored period would silently map to no code at all.
            raise ValueError(f"the highest supply tier ends at {spans[-1][1]} days but a period has {self.period_days}")
        return self
