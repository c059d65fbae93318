"""Values a device itself calls invalid, or not the patient's (demonstration, test, calibration,
control solution), decoded from the profiles' bytes and fed through the real pipeline: they drive
no alarm, no accepted reading and no billing evidence.  Each case has its twin without the status
bit, which does raise the alarm: the bit alone makes the difference.
"""

from __future__ import annotations

import itertools

import pytest

from drivers.ble import glucose, plx
from gateway.config.processing import AlarmSection, Limit, VitalLimits
from gateway.pipeline import PatientSetup, Pipeline, PipelineOutput
from gateway.records import AlarmRecord, ClockQuality, DeviceFlag, VitalReading

T0 = 1_780_000_000.0


def _pipeline() -> Pipeline:
    limits = dict(AlarmSection().limits)
    limits["glucose"] = VitalLimits(low=Limit(raise_at=54, min_duration_s=0, severity="high"))
    counter = itertools.count(1)
    setup = PatientSetup("p", limits, {"dev": "ble"})
    return Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p": setup})


def _feed(readings: list[VitalReading]) -> PipelineOutput:
    pipeline, out = _pipeline(), PipelineOutput()
    for r in readings:
        out.extend(pipeline.feed("p", r))
    out.extend(pipeline.flush(T0 + 10_000))
    return out


def _raised(out: PipelineOutput) -> set[str]:
    return {r.condition for r in out.records if isinstance(r, AlarmRecord)}


def _plx(measurement_status: int) -> list[VitalReading]:
    """40 s of PLX Continuous at SpO2 85 %, pulse 80 /min, with this measurement status."""
    payload = bytes([0x04, 85, 0x00, 80, 0x00]) + measurement_status.to_bytes(2, "little")
    m = plx.decode_continuous(payload)
    return [r for k in range(40) for r in plx.to_vitals(m, "dev", T0 + k, ClockQuality.SYNCED)]


@pytest.mark.parametrize(
    ("bit", "flag"),
    [
        (10, DeviceFlag.NOT_PATIENT),  # data for demonstration
        (11, DeviceFlag.NOT_PATIENT),  # data for testing
        (12, DeviceFlag.NOT_PATIENT),  # calibration ongoing
        (15, DeviceFlag.INVALID),  # invalid measurement detected
    ],
)
def test_an_oximeter_reading_it_calls_invalid_or_not_the_patients_raises_nothing(bit: int, flag: DeviceFlag) -> None:
    flagged = _plx(1 << bit)
    assert all(flag in r.flags for r in flagged)
    out = _feed(flagged)
    assert "spo2_low" not in _raised(out)
    assert out.accepted == [] and out.evidence == []
    # The same readings without the bit: a desaturation, raised and counted.
    out = _feed(_plx(0))
    assert "spo2_low" in _raised(out) and out.evidence


def test_a_questionable_oximeter_reading_is_still_the_patients() -> None:
    out = _feed(_plx(1 << 14))  # questionable measurement detected: given, with a doubt
    assert "spo2_low" in _raised(out)


def _glucose(type_location: int, status: int | None = None, mg_dl: int = 40) -> list[VitalReading]:
    """One Glucose Measurement of ``mg_dl`` (kg/L, SFLOAT exponent -5) with this type/location byte
    and Sensor Status Annunciation."""
    flags = 0x02 | (0x08 if status is not None else 0)
    payload = bytes([flags]) + (7).to_bytes(2, "little") + bytes.fromhex("EA07030A080000")
    payload += (mg_dl | 0xB000).to_bytes(2, "little") + bytes([type_location])
    if status is not None:
        payload += status.to_bytes(2, "little")
    m = glucose.decode(payload)
    assert m.mg_dl == mg_dl
    return glucose.to_vitals(m, "dev", T0, ClockQuality.SYNCED)


@pytest.mark.parametrize(
    ("type_location", "why"),
    [(0x1A, "sample type: control solution"), (0x41, "sample location: control solution")],
)
def test_a_control_solution_test_is_not_the_patients_glucose(type_location: int, why: str) -> None:
    out = _feed(_glucose(type_location))
    assert "glucose_low" not in _raised(out), why
    assert out.accepted == [] and out.evidence == []
    out = _feed(_glucose(0x11))  # capillary whole blood, finger: the patient's
    assert "glucose_low" in _raised(out) and out.evidence


@pytest.mark.parametrize(
    "bit",
    [
        1,  # sensor malfunction
        2,  # sample size insufficient
        3,  # strip insertion error
        4,  # strip type incorrect
        7,  # temperature too high for a valid result
        8,  # temperature too low for a valid result
        9,  # sample read interrupted
        10,  # general device fault
    ],
)
def test_a_glucose_result_the_meter_calls_faulty_is_no_reading(bit: int) -> None:
    out = _feed(_glucose(0x11, status=1 << bit))
    assert "glucose_low" not in _raised(out)
    assert out.accepted == [] and out.evidence == []


@pytest.mark.parametrize("bit", [0, 6, 11])  # battery low, "LO" (below what it can read), time fault
def test_a_glucose_result_with_a_status_that_leaves_it_good_is_kept(bit: int) -> None:
    out = _feed(_glucose(0x11, status=1 << bit))
    assert "glucose_low" in _raised(out) and out.evidence
