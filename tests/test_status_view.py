"""The demo's live screen (gateway.status_view.LiveView): each patient's vitals line."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gateway.pipeline import PipelineOutput
from gateway.readings import SampleBlock, VitalReading
from gateway.records import AlarmEvent, AlarmRecord, ClockQuality, Severity, Vital
from gateway.status_view import STALE_S, LiveView

T0 = 1_780_000_000.0


class _Daemon:
    """What ``LiveView.tick`` reads of the daemon: nothing connected, nothing queued."""

    def snapshot(self) -> dict[str, Any]:
        return {"outbox": None, "uplink": None, "sessions": []}


def _screen(readings: list[VitalReading], blocks: tuple[SampleBlock, ...] = ()) -> list[str]:
    out = io.StringIO()
    view = LiveView(out, every_s=0.0)
    view.observe("p-a", None, PipelineOutput(accepted=readings))
    for block in blocks:  # samples with nothing released from them
        view.observe("p-a", block, PipelineOutput())
    view.tick(_Daemon())  # type: ignore[arg-type]
    return [line for line in out.getvalue().splitlines() if " p-a " in line]


def _date(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _hr(t: float, value: float) -> VitalReading:
    return VitalReading("strap", Vital.HEART_RATE, value, "/min", T0 + t)


def _rr(t: float, value: float) -> VitalReading:
    return VitalReading("strap", Vital.RR_INTERVAL, value, "ms", T0 + t)


def test_a_current_heart_rate_is_shown_as_it_is() -> None:
    assert _screen([_hr(0.0, 125.0), _rr(0.5, 480.0)])[0].endswith("HR(ECG) 125/min")


def test_a_heart_rate_held_back_for_minutes_says_how_old_it_is() -> None:
    """vfdb 424 in the demo: the last rate before VF (125 /min), then nothing through two minutes
    of VF; an RR interval during the asystole after it dated the line, and the 125 /min read as
    that moment's rate."""
    line = _screen([_hr(0.0, 125.0), _rr(170.0, 1828.0)])[0]
    assert line.startswith(_date(T0 + 170.0))  # the line is dated by the latest reading
    assert line.endswith("HR(ECG) 125/min (3 min old)")


def test_just_past_the_limit_the_age_is_shown() -> None:
    assert _screen([_hr(0.0, 80.0), _rr(STALE_S, 750.0)])[0].endswith("HR(ECG) 80/min")
    assert _screen([_hr(0.0, 80.0), _rr(STALE_S + 1.0, 750.0)])[0].endswith("HR(ECG) 80/min (16 s old)")


def test_a_spot_check_is_shown_as_it_is_however_old() -> None:
    temperature = VitalReading("thermo", Vital.BODY_TEMPERATURE, 37.2, "Cel", T0)
    assert _screen([temperature, _hr(300.0, 70.0)])[0].endswith("HR(ECG) 70/min  Temp 37°C")


def _ecg(t: float, seconds: float = 1.0) -> SampleBlock:
    return SampleBlock("strap", "ecg", 250.0, T0 + t, np.zeros(round(250 * seconds)), "mV")


def test_samples_with_no_rate_released_from_them_age_the_last_rate() -> None:
    """vfdb 424 in the demo, an ECG-only patient: through two minutes of VF no rate and no RR
    interval is released, and the line went on showing 125 /min dated before the VF."""
    line = _screen([_hr(0.0, 125.0)], (_ecg(40.0), _ecg(41.0)))[0]
    assert line.startswith(_date(T0 + 42.0))  # dated by the end of the last samples
    assert line.endswith("HR(ECG) 125/min (42 s old)")
    # Samples of a rate still flowing leave it as it is, and an earlier block does not date it back.
    assert _screen([_hr(0.0, 80.0), _rr(0.5, 750.0)], (_ecg(1.0), _ecg(-5.0)))[0].endswith("HR(ECG) 80/min")


def _alarm(alarm_id: str, event: AlarmEvent, condition: str) -> AlarmRecord:
    return AlarmRecord(
        key=f"gw:{alarm_id}:{event.value}",
        gateway_id="gw",
        patient="p-a",
        time=datetime.fromtimestamp(T0, tz=UTC),
        clock=ClockQuality.SYNCED,
        alarm_id=alarm_id,
        event=event,
        condition=condition,
        technical=condition == "no_valid_ecg",
        severity=Severity.HIGH,
        device="strap",
    )


def test_the_line_names_the_alarms_still_on() -> None:
    out = io.StringIO()
    view = LiveView(out, every_s=0.0)
    view.observe("p-a", None, PipelineOutput(accepted=[_hr(0.0, 125.0)]))
    for rec in (
        _alarm("a1", AlarmEvent.RAISED, "no_valid_ecg"),
        _alarm("a1", AlarmEvent.CLEARED, "no_valid_ecg"),
        _alarm("a2", AlarmEvent.RAISED, "ventricular_fibrillation"),
        _alarm("a3", AlarmEvent.RAISED, "heart_rate_high"),
    ):
        view.record(rec)
    view.tick(_Daemon())  # type: ignore[arg-type]
    view.record(_alarm("a2", AlarmEvent.CLEARED, "ventricular_fibrillation"))
    view.record(_alarm("a3", AlarmEvent.CLEARED, "heart_rate_high"))
    view.tick(_Daemon())  # type: ignore[arg-type]
    lines = [line for line in out.getvalue().splitlines() if " p-a " in line and "HR(ECG)" in line]
    assert lines[0].endswith("HR(ECG) 125/min  | alarms on: heart rate high, ventricular fibrillation")
    assert lines[1].endswith("HR(ECG) 125/min")
