"""Blood Pressure Measurement 0x2A35 (Blood Pressure service 0x1810, indicate)."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.wire import DeviceDateTime, Reader, in_range
from gateway.readings import ClockQuality, DeviceFlag, Vital, VitalReading

SERVICE = "00001810-0000-1000-8000-00805f9b34fb"
MEASUREMENT = "00002a35-0000-1000-8000-00805f9b34fb"

MMHG_PER_KPA = 7.500617
PRESSURE_RANGE_MMHG = (0.0, 400.0)
PRESSURE_RANGE_KPA = (0.0, 400.0 / MMHG_PER_KPA)
PR_RANGE = (0.0, 400.0)

_STATUS_FLAGS: dict[int, DeviceFlag] = {
    1 << 0: DeviceFlag.BODY_MOVEMENT,
    1 << 1: DeviceFlag.CUFF_LOOSE,
    1 << 2: DeviceFlag.IRREGULAR_PULSE,
    1 << 5: DeviceFlag.IMPROPER_POSITION,
}
_PULSE_RANGE_MASK = 0b11 << 3  # 01 above upper limit, 10 below lower limit


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    systolic: float | None
    diastolic: float | None
    mean_arterial: float | None
    unit: str  # "mmHg" or "kPa", as sent
    timestamp: DeviceDateTime | None = None
    pulse_rate: float | None = None
    user_id: int | None = None
    status: int | None = None


def decode(data: bytes) -> BloodPressureMeasurement:
    r = Reader(data)
    flags = r.u8("flags")
    kpa = bool(flags & 0x01)
    lo, hi = PRESSURE_RANGE_KPA if kpa else PRESSURE_RANGE_MMHG
    sys_ = in_range("systolic", r.sfloat("systolic"), lo, hi)
    dia = in_range("diastolic", r.sfloat("diastolic"), lo, hi)
    mean = in_range("mean arterial pressure", r.sfloat("mean arterial pressure"), lo, hi)
    ts = r.date_time("timestamp") if flags & 0x02 else None
    pr = in_range("pulse rate", r.sfloat("pulse rate"), *PR_RANGE) if flags & 0x04 else None
    user = r.u8("user id") if flags & 0x08 else None
    status = r.u16("measurement status") if flags & 0x10 else None
    return BloodPressureMeasurement(sys_, dia, mean, "kPa" if kpa else "mmHg", ts, pr, user, status)


def status_flags(status: int | None) -> frozenset[DeviceFlag]:
    if status is None:
        return frozenset()
    out = {flag for bit, flag in _STATUS_FLAGS.items() if status & bit}
    if status & _PULSE_RANGE_MASK:
        out.add(DeviceFlag.QUESTIONABLE)
    return frozenset(out)


def _mmhg(value: float | None, unit: str) -> float | None:
    if value is None or unit == "mmHg":
        return value
    return round(value * MMHG_PER_KPA, 1)


def to_vitals(
    m: BloodPressureMeasurement,
    device_id: str,
    t: float,
    clock: ClockQuality,
    device_time: float | None = None,
) -> list[VitalReading]:
    flags = status_flags(m.status)
    out = [
        VitalReading(device_id, vital, _mmhg(v, m.unit), "mm[Hg]", t, clock, flags, device_time)
        for vital, v in (
            (Vital.SYSTOLIC_BP, m.systolic),
            (Vital.DIASTOLIC_BP, m.diastolic),
            (Vital.MEAN_BP, m.mean_arterial),
        )
    ]
    if m.pulse_rate is not None:
        out.append(VitalReading(device_id, Vital.PULSE_RATE, m.pulse_rate, "/min", t, clock, flags, device_time))
    return out
