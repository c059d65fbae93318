"""ECG rhythm alarms of one patient: extreme bradycardia/tachycardia and waveform rhythms.

* ``extreme_bradycardia`` / ``extreme_tachycardia``: threshold rules on the heart rate with their
  own limits and shorter delays (``alarms.ecg`` in the config), beside the per-vital limits.
* ``ventricular_fibrillation``, ``ventricular_tachycardia`` and ``asystole``: raised and cleared
  by the ECG channel's rhythm events, high severity, not technical; one alarm per condition and
  device at a time.  VT's settings (``alarms.ecg.ventricular_tachycardia``) become the channel's
  ``VtSettings`` here, and the "no valid ECG" delays (``alarms.ecg.no_valid_ecg``, seconds) its
  counts of quality windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gateway.alarms import AlarmEngine, AlarmTransition, ThresholdRule
from gateway.config.processing import EcgAlarmSection, NoValidEcg, VentricularTachycardia
from gateway.records import Severity, Vital
from gateway.signal.ecg_output import RhythmEvent
from gateway.signal.ecg_quality import QualityParams
from gateway.signal.vt_detector import VtSettings

QUALITY_WINDOW_S = QualityParams().window_s
EXTREME_BRADYCARDIA = "extreme_bradycardia"
EXTREME_TACHYCARDIA = "extreme_tachycardia"


def no_valid_ecg_windows(section: NoValidEcg, window_s: float = QUALITY_WINDOW_S) -> dict[str, int]:
    """``EcgSettings``' alarm fields from the config's seconds, rounded up to whole quality windows:
    ``raise_after_s`` of noisy windows among that plus one window; ``unreadable_after_s`` of
    windows after which the readings were held back (0: never)."""
    bad = math.ceil(section.raise_after_s / window_s - 1e-9)
    return {
        "alarm_bad_windows": bad,
        "alarm_of_windows": bad + 1,
        "alarm_clear_windows": math.ceil(section.clear_after_s / window_s - 1e-9),
        "alarm_held_windows": math.ceil(section.unreadable_after_s / window_s - 1e-9),
    }


def vt_settings(section: VentricularTachycardia) -> VtSettings:
    """The VT detector's settings from the config: a run of ``run_beats``, all but one ventricular."""
    return VtSettings(
        enabled=section.enabled,
        min_rate=section.min_rate,
        run_beats=section.run_beats,
        ventricular_beats=section.run_beats - 1,
    )


class ExtremeRateRules:
    def __init__(self, scope: str, section: EcgAlarmSection) -> None:
        self._rules = {
            EXTREME_BRADYCARDIA: ThresholdRule(
                scope, Vital.HEART_RATE, "low", section.extreme_bradycardia, EXTREME_BRADYCARDIA
            ),
            EXTREME_TACHYCARDIA: ThresholdRule(
                scope, Vital.HEART_RATE, "high", section.extreme_tachycardia, EXTREME_TACHYCARDIA
            ),
        }

    def observe(self, vital: Vital, value: float, t: float, device: str | None) -> list[AlarmTransition]:
        if vital is not Vital.HEART_RATE:
            return []
        return [tr for r in self._rules.values() if (tr := r.observe(value, t, device)) is not None]

    def invalid(self, vital: Vital) -> None:
        if vital is Vital.HEART_RATE:
            for r in self._rules.values():
                r.interrupt()

    def active_conditions(self) -> list[str]:
        return [c for c, r in self._rules.items() if r.active]

    def withdraw(self, t: float) -> list[AlarmTransition]:
        """Clear the raised ones: their patient left the config."""
        return [
            tr for r in self._rules.values() if (tr := r.withdraw(t, "patient removed from the config")) is not None
        ]

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"condition": c, "active_id": r._s.active_id, "worst": r._s.worst}
            for c, r in self._rules.items()
            if r.active
        ]

    def restore(self, items: list[Mapping[str, Any]]) -> None:
        for item in items:
            rule = self._rules.get(str(item["condition"]))
            if rule is None:
                continue
            rule._s.active_id = str(item["active_id"])
            rule._s.worst = None if item.get("worst") is None else float(item["worst"])


def rhythm_transitions(alarms: AlarmEngine, event: RhythmEvent, device: str, channel: str) -> list[AlarmTransition]:
    """Raise or clear a rhythm seen in the waveform (VF, asystole) as a high-severity alarm."""
    detail = f"{channel}: onset {event.onset_time - event.time:+.1f} s" if event.active else channel
    return alarms.technical(
        event.condition,
        event.active,
        event.time,
        device=device,
        severity=Severity.HIGH,
        detail=detail,
        technical=False,
    )
