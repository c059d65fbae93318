"""Config sections for edge processing: summaries, alarm limits with hysteresis, signal settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.config import vital_ranges
from gateway.config.errors import ValueErrorAt


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SummarySection(_Model):
    period_s: float = Field(60.0, ge=1, le=3600, description="Summary period per patient and vital")


class Limit(_Model):
    """One threshold rule: raise after ``min_duration_s`` beyond ``raise_at``, clear inside ``clear_at``."""

    raise_at: float
    clear_at: float | None = Field(None, description="Hysteresis: default = raise_at (no hysteresis)")
    min_duration_s: float = Field(10.0, ge=0)
    severity: Literal["low", "medium", "high"] = "medium"


class VitalLimits(_Model):
    low: Limit | None = None
    high: Limit | None = None

    @model_validator(mode="after")
    def _order(self) -> VitalLimits:
        # Located at the field to change, so check-config names its line.
        low, high = self.low, self.high
        if low and low.clear_at is not None and low.clear_at < low.raise_at:
            raise ValueErrorAt(
                f"a low alarm clears above its limit: clear_at ({low.clear_at:g}) must be at least "
                f"raise_at ({low.raise_at:g})",
                ("low", "clear_at"),
            )
        if high and high.clear_at is not None and high.clear_at > high.raise_at:
            raise ValueErrorAt(
                f"a high alarm clears below its limit: clear_at ({high.clear_at:g}) must be at most "
                f"raise_at ({high.raise_at:g})",
                ("high", "clear_at"),
            )
        if low and high and low.raise_at >= high.raise_at:
            raise ValueErrorAt(
                f"low.raise_at ({low.raise_at:g}) must be below high.raise_at ({high.raise_at:g})", ("low", "raise_at")
            )
        return self


def _default_limits() -> dict[str, VitalLimits]:
    return {
        "spo2": VitalLimits(low=Limit(raise_at=90, clear_at=92, min_duration_s=10, severity="high")),
        "heart_rate": VitalLimits(
            low=Limit(raise_at=45, clear_at=50, min_duration_s=10, severity="high"),
            high=Limit(raise_at=130, clear_at=120, min_duration_s=10, severity="high"),
        ),
        "pulse_rate": VitalLimits(
            low=Limit(raise_at=45, clear_at=50, min_duration_s=10, severity="high"),
            high=Limit(raise_at=130, clear_at=120, min_duration_s=10, severity="high"),
        ),
        "body_temperature": VitalLimits(
            high=Limit(raise_at=38.5, clear_at=38.0, min_duration_s=0, severity="medium"),
        ),
        "systolic_bp": VitalLimits(
            low=Limit(raise_at=90, clear_at=95, min_duration_s=0, severity="medium"),
            high=Limit(raise_at=180, clear_at=170, min_duration_s=0, severity="high"),
        ),
    }


VITAL_NAMES = [
    "heart_rate",
    "pulse_rate",
    "spo2",
    "rr_interval",
    "hrv_sdnn",
    "hrv_rmssd",
    "perfusion_index",
    "systolic_bp",
    "diastolic_bp",
    "mean_bp",
    "body_temperature",
    "body_weight",
    "body_height",
    "bmi",
    "glucose",
    "respiratory_rate",
    "energy_expended",
]


def check_vital_names(v: dict[str, VitalLimits]) -> dict[str, VitalLimits]:
    """Known vital names, each with limits inside the vital's physiological range."""
    for name in v:
        if name not in VITAL_NAMES:
            raise ValueError(f"unknown vital {name!r}; allowed: {', '.join(VITAL_NAMES)}")
    vital_ranges.check_all(v)
    return v


class VentricularTachycardia(_Model):
    """'ventricular_tachycardia': a run of wide complexes, unlike the patient's own, at a high rate."""

    enabled: bool = True
    min_rate: float = Field(100.0, ge=80, le=200, description="Mean rate of the run (/min) at or above which it is VT")
    run_beats: int = Field(6, ge=4, le=12, description="Beats in the run, all but one of them ventricular")


class NoValidEcg(_Model):
    """'no valid ECG' (technical): when noise raises it and how long a clean signal clears it.
    The signal is judged in 4 s quality windows: both are rounded up to whole windows.  A flat
    or saturated line (an electrode off) raises it at once."""

    raise_after_s: float = Field(
        8.0, ge=4, le=60, description="Seconds of noisy windows, within this plus 4 s, that raise it"
    )
    clear_after_s: float = Field(16.0, ge=4, le=120, description="Seconds of clean signal in a row that clear it")
    unreadable_after_s: float = Field(
        12.0,
        ge=0,
        le=300,
        description="Seconds with the heart rate held back (no two clean windows in a row) that raise it when no "
        "noise, VT or asystole alarm says why; 0 turns this off",
    )


class EcgAlarmSection(_Model):
    """Rhythm alarms from the ECG waveform, beyond the per-vital heart-rate limits."""

    extreme_bradycardia: Limit = Field(
        Limit(raise_at=35, clear_at=40, min_duration_s=5, severity="high"),
        description="Heart rate below raise_at (/min) for min_duration_s: 'extreme_bradycardia'",
    )
    extreme_tachycardia: Limit = Field(
        Limit(raise_at=170, clear_at=160, min_duration_s=5, severity="high"),
        description="Heart rate above raise_at (/min) for min_duration_s: 'extreme_tachycardia'",
    )
    asystole_s: float = Field(
        6.0, ge=3, le=10, description="No QRS for this long on a live signal: 'asystole' (within 1 s more)"
    )
    ventricular_tachycardia: VentricularTachycardia = Field(default_factory=VentricularTachycardia)
    no_valid_ecg: NoValidEcg = Field(default_factory=NoValidEcg)

    @model_validator(mode="after")
    def _order(self) -> EcgAlarmSection:
        brady, tachy = self.extreme_bradycardia, self.extreme_tachycardia
        if brady.clear_at is not None and brady.clear_at < brady.raise_at:
            raise ValueError("extreme_bradycardia.clear_at must be >= its raise_at")
        if tachy.clear_at is not None and tachy.clear_at > tachy.raise_at:
            raise ValueError("extreme_tachycardia.clear_at must be <= its raise_at")
        if not 15 <= brady.raise_at < tachy.raise_at <= 350:
            raise ValueError("extreme_bradycardia.raise_at must be below extreme_tachycardia.raise_at (15-350 /min)")
        return self


class EvidenceSection(_Model):
    """Waveform strips sent after physiologic alarms raised on a streamed waveform (ECG, pleth)."""

    enabled: bool = True
    pre_s: float = Field(8.0, ge=1, le=60, description="Seconds of waveform before the alarm's raise")
    post_s: float = Field(4.0, ge=0, le=30, description="Seconds after it")
    max_pre_s: float = Field(
        20.0,
        ge=1,
        le=60,
        description=(
            "When the condition began earlier than pre_s before the raise (VF is raised some 8 s into "
            "an episode), the strip starts 2 s before its onset, but at most this long before the raise"
        ),
    )
    max_strip_bytes: int = Field(
        24_000, ge=1_000, le=1_000_000, description="Encoded size per strip; the oldest seconds go first beyond"
    )
    max_bytes_per_hour: int = Field(
        400_000, ge=1_000, le=100_000_000, description="Per patient over a sliding hour; strips beyond are not made"
    )

    technical_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description=(
            "Share of max_bytes_per_hour that strips of technical alarms ('no valid ECG': what the noise "
            "looked like) may use, so that they never take the room of a rhythm alarm's strip; 0: none"
        ),
    )

    @model_validator(mode="after")
    def _budget(self) -> EvidenceSection:
        if self.max_bytes_per_hour < self.max_strip_bytes:
            raise ValueError("max_bytes_per_hour must be at least max_strip_bytes")
        if self.max_pre_s < self.pre_s:
            raise ValueError("max_pre_s must be at least pre_s")
        return self


class AlarmSection(_Model):
    limits: dict[str, VitalLimits] = Field(
        default_factory=_default_limits, description="Per-vital limits; keys are vital names"
    )
    no_data_minutes: float = Field(5.0, gt=0, description="Technical alarm after this long without data")
    battery_low_pct: float = Field(15.0, ge=0, le=100)
    disconnect_alarm_s: float = Field(
        30.0, ge=0, le=3600, description="Technical alarm when a device stays disconnected this long"
    )
    ecg: EcgAlarmSection = EcgAlarmSection()
    evidence: EvidenceSection = EvidenceSection()

    @field_validator("limits")
    @classmethod
    def _known_vitals(cls, v: dict[str, VitalLimits]) -> dict[str, VitalLimits]:
        return check_vital_names(v)

    @model_validator(mode="after")
    def _extremes_beyond_limits(self) -> AlarmSection:
        hr = self.limits.get("heart_rate")
        if hr and hr.low and self.ecg.extreme_bradycardia.raise_at >= hr.low.raise_at:
            raise ValueError("ecg.extreme_bradycardia.raise_at must be below heart_rate.low.raise_at")
        if hr and hr.high and self.ecg.extreme_tachycardia.raise_at <= hr.high.raise_at:
            raise ValueError("ecg.extreme_tachycardia.raise_at must be above heart_rate.high.raise_at")
        return self


class Spo2Section(_Model):
    max_jump: float = Field(4.0, gt=0, le=50, description="Points off the recent median that need confirming")
    median_s: float = Field(5.0, ge=0, le=60, description="Running-median window")
    tau_s: float = Field(3.0, gt=0, le=60, description="Exponential smoothing time constant")


class ProcessingSection(_Model):
    summaries: SummarySection = SummarySection()
    ecg_hrv_window_s: float = Field(300.0, ge=10, le=3600, description="Window for SDNN/RMSSD")
    ecg_hrv_every_s: float = Field(60.0, ge=5, le=3600, description="How often SDNN/RMSSD are reported")
    spo2: Spo2Section = Spo2Section()
