"""Every worked vector of ../shared/reference/ble-health-profiles.md, plus properties over random bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ble import blood_pressure, glucose, heart_rate, plx, polar_pmd, thermometer, weight
from drivers.ble.ieee11073 import encode_float32, encode_sfloat, float32, sfloat
from drivers.ble.wire import DecodeError, DeviceDateTime
from gateway.records import ClockQuality, DeviceFlag, Vital


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- IEEE 11073 -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801])
def test_sfloat_special_values_are_no_value(raw: int) -> None:
    assert sfloat(raw) is None


@pytest.mark.parametrize("raw", [0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002, 0x00800001])
def test_float_special_values_are_no_value(raw: int) -> None:
    assert float32(raw) is None


@pytest.mark.parametrize(
    ("raw", "value"),
    [(0xF057, 8.7), (0xF3DE, 99.0), (0xE37A, 8.9), (0x0078, 120.0), (0xFFFF, -0.1), (0x1001, 10.0), (0x8001, 1e-8)],
)
def test_sfloat_numbers(raw: int, value: float) -> None:
    assert sfloat(raw) == pytest.approx(value, rel=1e-12)


def test_float_number_from_thermometer_vector() -> None:
    assert float32(0xFE000EB0) == 37.6


@given(st.integers(-2048, 2047), st.integers(-8, 7))
def test_sfloat_round_trip(m: int, e: int) -> None:
    raw = encode_sfloat(m, e)
    value = sfloat(raw)
    if raw in (0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801):
        assert value is None
    else:
        assert value == pytest.approx(m * 10.0**e, rel=1e-12)


@given(st.integers(-(2**23), 2**23 - 1), st.integers(-128, 127))
def test_float_round_trip(m: int, e: int) -> None:
    raw = encode_float32(m, e)
    value = float32(raw)
    if raw in (0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002, 0x00800001):
        assert value is None
    else:
        assert value == pytest.approx(m * 10.0**e, rel=1e-12)


# --- Heart rate -------------------------------------------------------------------------------


def test_hr_uint8_no_contact_feature() -> None:
    m = heart_rate.decode(h("0055"))
    assert (m.heart_rate, m.contact_supported, m.energy_expended_kj, m.rr_intervals_1024) == (85, False, None, ())


def test_hr_contact_supported_not_detected_flags_lead_off() -> None:
    m = heart_rate.decode(h("04FF"))
    assert (m.heart_rate, m.contact_supported, m.contact_detected) == (255, True, False)
    vitals = heart_rate.to_vitals(m, "hr1", 100.0, ClockQuality.SYNCED)
    assert vitals[0].flags == {DeviceFlag.LEAD_OFF}


def test_hr_energy_and_rr() -> None:
    m = heart_rate.decode(h("1E5532002100"))
    assert (m.heart_rate, m.contact_detected, m.energy_expended_kj, m.rr_intervals_1024) == (85, True, 50, (33,))
    vitals = heart_rate.to_vitals(m, "hr1", 100.0, ClockQuality.SYNCED)
    by = {v.vital: v for v in vitals}
    assert by[Vital.RR_INTERVAL].value == pytest.approx(33 * 1000 / 1024)
    assert by[Vital.RR_INTERVAL].unit == "ms"
    assert by[Vital.ENERGY_EXPENDED].value == 50.0


def test_hr_uint16_three_rr() -> None:
    m = heart_rate.decode(h("1F0101320101000201FFFF"))
    assert (m.heart_rate, m.energy_expended_kj, m.rr_intervals_1024) == (257, 306, (1, 258, 65535))


def test_hr_missing_promised_bytes_rejected() -> None:
    with pytest.raises(DecodeError):
        heart_rate.decode(h("170101"))


# --- Pulse oximeter ----------------------------------------------------------------------------


def test_plx_continuous_with_status_and_pai() -> None:
    m = plx.decode_continuous(h("1C5F005A00200000000057F0"))
    assert (m.spo2, m.pulse_rate, m.measurement_status, m.device_status) == (95, 90, 0x20, 0)
    assert m.pulse_amplitude_index == pytest.approx(8.7)
    assert plx.status_flags(m.measurement_status, m.device_status) == {DeviceFlag.SEARCHING}


def test_plx_continuous_fast_and_slow() -> None:
    m = plx.decode_continuous(h("1FDEF3CAF3CAF35AF5D4F3B2F22001000000" + "7AE3"))
    assert (m.spo2, m.pulse_rate) == (99.0, 97.0)
    assert (m.spo2_fast, m.pulse_rate_fast, m.spo2_slow, m.pulse_rate_slow) == (97.0, 137.0, 98.0, 69.0)
    assert m.measurement_status == 0x0120
    assert m.pulse_amplitude_index == pytest.approx(8.90)


def test_plx_spot_check() -> None:
    m = plx.decode_spot_check(h("0FACF3BEF5E8070B1D17083920402200" + "0066E3"))
    assert (m.spo2, m.pulse_rate) == (94.0, 147.0)
    assert m.timestamp == DeviceDateTime(2024, 11, 29, 23, 8, 57)
    assert (m.measurement_status, m.device_status) == (0x4020, 0x000022)
    assert m.pulse_amplitude_index == pytest.approx(8.70)
    flags = plx.status_flags(m.measurement_status, m.device_status)
    assert {DeviceFlag.QUESTIONABLE, DeviceFlag.LOW_PERFUSION, DeviceFlag.SENSOR_FAULT} <= flags


def test_plx_nan_spo2_is_no_value_and_impossible_spo2_rejected() -> None:
    assert plx.decode_continuous(h("00FF075A00")).spo2 is None
    with pytest.raises(DecodeError):
        plx.decode_continuous(h("0065005A00"))  # SpO2 101 %


# --- Blood pressure ------------------------------------------------------------------------------


def test_bp_mmhg_full() -> None:
    m = blood_pressure.decode(h("1E8A0058007800000004111429" + "3B3C00012700"))
    assert (m.systolic, m.diastolic, m.mean_arterial, m.unit) == (138, 88, 120, "mmHg")
    assert m.timestamp == DeviceDateTime(0, 4, 17, 20, 41, 59)
    assert m.timestamp is not None and m.timestamp.as_naive_unix() is None  # year unknown
    assert (m.pulse_rate, m.user_id, m.status) == (60, 1, 0x27)
    assert blood_pressure.status_flags(m.status) == {
        DeviceFlag.BODY_MOVEMENT,
        DeviceFlag.CUFF_LOOSE,
        DeviceFlag.IRREGULAR_PULSE,
        DeviceFlag.IMPROPER_POSITION,
    }


def test_bp_kpa_converted_to_mmhg() -> None:
    m = blood_pressure.decode(h("15BDF00B009FF03C001200"))
    assert (m.systolic, m.diastolic, m.mean_arterial, m.unit) == (18.9, 11.0, 15.9, "kPa")
    assert (m.pulse_rate, m.status) == (60, 0x12)
    vitals = {v.vital: v for v in blood_pressure.to_vitals(m, "bp", 1.0, ClockQuality.SYNCED)}
    assert vitals[Vital.SYSTOLIC_BP].value == pytest.approx(141.8)
    assert vitals[Vital.SYSTOLIC_BP].unit == "mm[Hg]"
    assert DeviceFlag.CUFF_LOOSE in vitals[Vital.SYSTOLIC_BP].flags


# --- Thermometer, weight -----------------------------------------------------------------------


def test_thermometer() -> None:
    m = thermometer.decode(h("06B00E00FEDC070C050B321B04"))
    assert (m.value, m.unit, m.temperature_type) == (37.6, "Cel", 4)
    assert m.timestamp == DeviceDateTime(2012, 12, 5, 11, 50, 27)


def test_thermometer_fahrenheit_to_celsius() -> None:
    raw = encode_float32(986, -1).to_bytes(4, "little")  # 98.6 °F
    assert thermometer.decode(b"\x01" + raw).celsius == 37.0


def test_weight_vectors() -> None:
    assert weight.decode(h("00B036")).weight == 70.0
    m = weight.decode(h("02B036E7070C190E1E2D"))
    assert m.weight == 70.0 and m.timestamp == DeviceDateTime(2023, 12, 25, 14, 30, 45)
    m = weight.decode(h("0F543DE7070C190E1E2D03F500A802"))
    assert (m.weight, m.unit, m.user_id, m.bmi, m.height) == (157.0, "lb", 3, 24.5, 68.0)
    assert m.weight_kg == pytest.approx(71.214, abs=1e-3)
    assert m.height_m == pytest.approx(1.727, abs=1e-3)


def test_weight_unsuccessful_is_no_value() -> None:
    assert weight.decode(h("00FFFF")).weight is None


# --- Glucose and RACP --------------------------------------------------------------------------


def test_glucose_nordic_vector() -> None:
    m = glucose.decode(h("1B0100E307021B0B0A1EFBFF1E00120501"))
    assert (m.sequence, m.time_offset_min, m.concentration, m.unit) == (1, -5, 30.0, "kg/L")
    assert m.base_time == DeviceDateTime(2019, 2, 27, 11, 10, 30)
    assert (m.sample_type, m.sample_location, m.status, m.context_follows) == (2, 1, 0x0105, True)
    assert m.device_time == DeviceDateTime(2019, 2, 27, 11, 5, 30).as_naive_unix()


def test_glucose_realistic_mg_dl() -> None:
    data = b"\x02" + (7).to_bytes(2, "little") + h("EA07030A080000") + h("5FB0") + b"\x11"
    m = glucose.decode(data)
    assert m.mg_dl == pytest.approx(95.0)
    (v,) = glucose.to_vitals(m, "g", 1.0, ClockQuality.SYNCED)
    assert (v.vital, v.value, v.unit, v.flags) == (Vital.GLUCOSE, pytest.approx(95.0), "mg/dL", frozenset())


def test_glucose_control_solution_is_flagged() -> None:
    data = b"\x02" + (7).to_bytes(2, "little") + h("EA07030A080000") + h("5FB0") + b"\x4a"
    (v,) = glucose.to_vitals(glucose.decode(data), "g", 1.0, ClockQuality.SYNCED)
    assert DeviceFlag.NOT_PATIENT in v.flags


def test_racp_requests() -> None:
    assert glucose.racp_all_records() == h("0101")
    assert glucose.racp_records_from(42) == h("010301" + "2A00")
    assert glucose.racp_records_after(41) == h("0103012A00")
    assert glucose.racp_records_after(None) == h("0101")
    assert glucose.racp_count_all() == h("0401")
    assert glucose.racp_last_record() == h("0106")
    assert glucose.racp_abort() == h("0300")


def test_racp_responses() -> None:
    assert glucose.decode_racp(h("05000300")).number_of_records == 3
    ok = glucose.decode_racp(h("06000101"))
    assert (ok.request_opcode, ok.result, ok.done) == (1, glucose.RacpResult.SUCCESS, True)
    assert glucose.decode_racp(h("06000106")).result is glucose.RacpResult.NO_RECORDS_FOUND
    for code in (2, 3, 4, 5, 7, 8, 9):
        assert glucose.decode_racp(bytes([6, 0, 1, code])).result == glucose.RacpResult(code)
    with pytest.raises(DecodeError):
        glucose.decode_racp(h("0600010A"))


# --- Polar PMD ---------------------------------------------------------------------------------


def test_polar_ecg_vector() -> None:
    f = polar_pmd.decode_ecg(h("0000943577000000000002" + "80FF028000"))
    assert f.sensor_time_ns == 2_000_000_000
    assert f.samples_uv == (-32766, 32770)
    assert f.last_sample_unix == 946_684_802.0


def test_polar_start_command_and_control_response() -> None:
    assert h("02000001820001010E00") == polar_pmd.START_ECG
    r = polar_pmd.decode_control(h("F0020000"))
    assert (r.opcode, r.measurement_type, r.error, r.ok) == (2, 0, polar_pmd.PmdError.SUCCESS, True)
    assert not polar_pmd.decode_control(h("F002000D")).ok  # device in charger


def _frame(ts_ns: int, samples: list[int]) -> bytes:
    body = b"".join(s.to_bytes(3, "little", signed=True) for s in samples)
    return b"\x00" + ts_ns.to_bytes(8, "little") + b"\x00" + body


def test_polar_timeline_numbers_samples_and_marks_gaps() -> None:
    period = 1e9 / 130
    tl = polar_pmd.EcgTimeline("strap")
    n = 73
    t_last = 10**12
    blocks = []
    for k in (0, 1, 3, 4):  # frame 2 lost
        ts = round(t_last + k * n * period)
        blocks.append(tl.block(polar_pmd.decode_ecg(_frame(ts, list(range(n)))), 5000.0 + k, ClockQuality.SYNCED))
    assert [b.first_index for b in blocks] == [0, n, 3 * n, 4 * n]
    assert [b.gap_before for b in blocks] == [False, False, True, False]
    # Anchored on the first frame's arrival; later frames keep the sensor's spacing.
    assert blocks[0].first_sample_time + (n - 1) / 130 == pytest.approx(5000.0)
    assert blocks[3].first_sample_time - blocks[0].first_sample_time == pytest.approx(4 * n / 130)
    assert (blocks[0].channel, blocks[0].unit, blocks[0].sample_rate_hz) == ("ecg", "uV", 130.0)


# --- Properties: any bytes -> values in range or DecodeError -----------------------------------


def _numbers(obj: object) -> list[tuple[str, float]]:
    assert dataclasses.is_dataclass(obj)
    out = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, float):
            out.append((f.name, v))
    return out


def _check(decode: Callable[[bytes], object], data: bytes, ranges: dict[str, tuple[float, float]]) -> None:
    try:
        m = decode(data)
    except DecodeError:
        return
    for name, v in _numbers(m):
        assert math.isfinite(v), name
        lo, hi = ranges.get(name, (-math.inf, math.inf))
        assert lo <= v <= hi, (name, v)


payloads = st.binary(max_size=32)


@given(payloads)
def test_any_bytes_heart_rate(data: bytes) -> None:
    try:
        m = heart_rate.decode(data)
    except DecodeError:
        return
    assert 0 <= m.heart_rate <= 0xFFFF and all(0 <= rr <= 0xFFFF for rr in m.rr_intervals_1024)


@given(payloads)
def test_any_bytes_plx(data: bytes) -> None:
    ranges = {k: plx.SPO2_RANGE for k in ("spo2", "spo2_fast", "spo2_slow")}
    ranges |= {k: plx.PR_RANGE for k in ("pulse_rate", "pulse_rate_fast", "pulse_rate_slow")}
    ranges["pulse_amplitude_index"] = plx.PAI_RANGE
    _check(plx.decode_continuous, data, ranges)
    _check(plx.decode_spot_check, data, ranges)


@given(payloads)
def test_any_bytes_blood_pressure(data: bytes) -> None:
    r = blood_pressure.PRESSURE_RANGE_MMHG
    _check(blood_pressure.decode, data, {"systolic": r, "diastolic": r, "mean_arterial": r, "pulse_rate": (0, 400)})


@given(payloads)
def test_any_bytes_thermometer(data: bytes) -> None:
    _check(thermometer.decode, data, {"value": thermometer.FAHRENHEIT_RANGE})


@given(payloads)
def test_any_bytes_weight(data: bytes) -> None:
    _check(weight.decode, data, {"weight": (0, 655.35), "bmi": (0, 6553.5), "height": (0, 6553.5)})


@given(payloads)
def test_any_bytes_glucose(data: bytes) -> None:
    _check(glucose.decode, data, {"concentration": glucose.CONCENTRATION_RANGE})
    with contextlib.suppress(DecodeError):
        glucose.decode_racp(data)


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_any_bytes_polar(data: bytes) -> None:
    for decode in (polar_pmd.decode_ecg, polar_pmd.decode_control):
        with contextlib.suppress(DecodeError):
            decode(data)


@given(st.binary(min_size=10, max_size=40))
def test_glucose_with_time_fields_never_escapes(data: bytes) -> None:
    # Dates are where garbage turns into ValueError from datetime(): make sure it stays DecodeError.
    try:
        m = glucose.decode(b"\x01" + data)
    except DecodeError:
        return
    assert m.device_time is None or math.isfinite(m.device_time)
