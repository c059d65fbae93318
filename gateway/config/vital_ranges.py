"""Physiological ranges for alarm limits: a limit outside them is a typo, not a clinical choice.

``raise_at: 900`` for SpO2 (meant 90) makes an alarm that is always raised and can never clear; a
temperature limit of 101 (°F typed where °C is meant) never raises.  Both are valid numbers to the
schema, so each vital's limits are checked against the range its unit allows.  The ranges are wider
than what a living patient shows: they refuse impossible settings, not unusual ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.config.errors import ValueErrorAt

if TYPE_CHECKING:
    from gateway.config.processing import VitalLimits

# vital name -> (lowest, highest, unit as the technician reads it)
LIMIT_RANGES: dict[str, tuple[float, float, str]] = {
    "heart_rate": (0, 300, "/min"),
    "pulse_rate": (0, 300, "/min"),
    "spo2": (0, 100, "%"),
    "rr_interval": (0, 5000, "ms"),
    "hrv_sdnn": (0, 1000, "ms"),
    "hrv_rmssd": (0, 1000, "ms"),
    "perfusion_index": (0, 20, "%"),
    "systolic_bp": (0, 300, "mmHg"),
    "diastolic_bp": (0, 300, "mmHg"),
    "mean_bp": (0, 300, "mmHg"),
    "body_temperature": (25, 45, "°C"),
    "body_weight": (0, 500, "kg"),
    "body_height": (0, 3, "m"),
    "bmi": (0, 200, "kg/m²"),
    "glucose": (0, 1000, "mg/dL"),
    "respiratory_rate": (0, 120, "/min"),
    "energy_expended": (0, 100_000, "kJ"),
}


def _num(v: float) -> str:
    return f"{v:g}"


def range_text(vital: str) -> str:
    lo, hi, unit = LIMIT_RANGES[vital]
    sep = "" if unit.startswith("/") else " "
    return f"{_num(lo)}–{_num(hi)}{sep}{unit}"


def check_limits(vital: str, limits: VitalLimits) -> None:
    """Raise ``ValueErrorAt`` (located at ``<vital>.<low|high>.<field>``) for the first limit outside
    the vital's range.  Vitals without a range are left alone."""
    if vital not in LIMIT_RANGES:
        return
    lo, hi, _ = LIMIT_RANGES[vital]
    for direction in ("low", "high"):
        limit = getattr(limits, direction)
        if limit is None:
            continue
        for name in ("raise_at", "clear_at"):
            value = getattr(limit, name)
            if value is not None and not lo <= value <= hi:
                raise ValueErrorAt(
                    f"{_num(value)} is outside the possible range of {vital} ({range_text(vital)})",
                    (vital, direction, name),
                )


def check_all(limits: Mapping[str, VitalLimits]) -> None:
    for vital, lim in limits.items():
        check_limits(vital, lim)
