"""Pulse Oximeter service 0x1822: PLX Continuous 0x2A5F (notify) and PLX Spot-check 0x2A5E (indicate)."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.wire import DeviceDateTime, Reader, in_range
from gateway.readings import ClockQuality, DeviceFlag, Vital, VitalReading

SERVICE = "00001822-0000-1000-8000-00805f9b34fb"
SPOT_CHECK = "00002a5e-0000-1000-8000-00805f9b34fb"
CONTINUOUS = "00002a5f-0000-1000-8000-00805f9b34fb"
FEATURES = "00002a60-0000-1000-8000-00805f9b34fb"

SPO2_RANGE = (0.0, 100.0)
PR_RANGE = (0.0, 400.0)
PAI_RANGE = (0.0, 100.0)  # a percentage

# Measurement status (uint16); bits 7 (validated), 8 (fully qualified), 9 (from storage) say nothing bad.
_MS_FLAGS: dict[int, DeviceFlag] = {
    1 << 5: DeviceFlag.SEARCHING,  # measurement ongoing: value not settled yet
    1 << 6: DeviceFlag.SEARCHING,  # early estimated data
    1 << 10: DeviceFlag.NOT_PATIENT,  # data for demonstration: never a patient's
    1 << 11: DeviceFlag.NOT_PATIENT,  # data for testing
    1 << 12: DeviceFlag.NOT_PATIENT,  # calibration ongoing
    1 << 13: DeviceFlag.ARTIFACT,  # measurement unavailable
    1 << 14: DeviceFlag.QUESTIONABLE,  # questionable measurement detected: given, with a doubt
    1 << 15: DeviceFlag.INVALID,  # invalid measurement detected
}

# Device and sensor status (24 bit); bit 0 (extended display update) says nothing about the value.
_DSS_FLAGS: dict[int, DeviceFlag] = {
    1 << 1: DeviceFlag.SENSOR_FAULT,  # equipment malfunction
    1 << 2: DeviceFlag.ARTIFACT,  # signal processing irregularity
    1 << 3: DeviceFlag.ARTIFACT,  # inadequate signal
    1 << 4: DeviceFlag.LOW_SIGNAL_QUALITY,  # poor signal
    1 << 5: DeviceFlag.LOW_PERFUSION,
    1 << 6: DeviceFlag.ARTIFACT,  # erratic signal
    1 << 7: DeviceFlag.ARTIFACT,  # non-pulsatile signal
    1 << 8: DeviceFlag.QUESTIONABLE,  # questionable pulse
    1 << 9: DeviceFlag.SEARCHING,  # signal analysis ongoing
    1 << 10: DeviceFlag.ARTIFACT,  # sensor interference
    1 << 11: DeviceFlag.SENSOR_OFF,  # sensor unconnected to user
    1 << 12: DeviceFlag.SENSOR_FAULT,  # unknown sensor connected
    1 << 13: DeviceFlag.SENSOR_FAULT,  # sensor displaced
    1 << 14: DeviceFlag.SENSOR_FAULT,  # sensor malfunctioning
    1 << 15: DeviceFlag.SENSOR_OFF,  # sensor disconnected
}


@dataclass(frozen=True, slots=True)
class PlxContinuous:
    spo2: float | None
    pulse_rate: float | None
    spo2_fast: float | None = None
    pulse_rate_fast: float | None = None
    spo2_slow: float | None = None
    pulse_rate_slow: float | None = None
    measurement_status: int | None = None
    device_status: int | None = None
    pulse_amplitude_index: float | None = None


@dataclass(frozen=True, slots=True)
class PlxSpotCheck:
    spo2: float | None
    pulse_rate: float | None
    timestamp: DeviceDateTime | None = None
    measurement_status: int | None = None
    device_status: int | None = None
    pulse_amplitude_index: float | None = None
    device_clock_not_set: bool = False


def _spo2(r: Reader, what: str) -> float | None:
    return in_range(what, r.sfloat(what), *SPO2_RANGE)


def _pr(r: Reader, what: str) -> float | None:
    return in_range(what, r.sfloat(what), *PR_RANGE)


def decode_continuous(data: bytes) -> PlxContinuous:
    r = Reader(data)
    flags = r.u8("flags")
    spo2, pr = _spo2(r, "SpO2"), _pr(r, "pulse rate")
    fast = (_spo2(r, "SpO2 fast"), _pr(r, "pulse rate fast")) if flags & 0x01 else (None, None)
    slow = (_spo2(r, "SpO2 slow"), _pr(r, "pulse rate slow")) if flags & 0x02 else (None, None)
    ms = r.u16("measurement status") if flags & 0x04 else None
    dss = r.u24("device and sensor status") if flags & 0x08 else None
    pai = in_range("PAI", r.sfloat("PAI"), *PAI_RANGE) if flags & 0x10 else None
    return PlxContinuous(spo2, pr, fast[0], fast[1], slow[0], slow[1], ms, dss, pai)


def decode_spot_check(data: bytes) -> PlxSpotCheck:
    r = Reader(data)
    flags = r.u8("flags")
    spo2, pr = _spo2(r, "SpO2"), _pr(r, "pulse rate")
    ts = r.date_time("timestamp") if flags & 0x01 else None
    ms = r.u16("measurement status") if flags & 0x02 else None
    dss = r.u24("device and sensor status") if flags & 0x04 else None
    pai = in_range("PAI", r.sfloat("PAI"), *PAI_RANGE) if flags & 0x08 else None
    return PlxSpotCheck(spo2, pr, ts, ms, dss, pai, device_clock_not_set=bool(flags & 0x10))


def status_flags(measurement_status: int | None, device_status: int | None) -> frozenset[DeviceFlag]:
    out: set[DeviceFlag] = set()
    if measurement_status is not None:
        for bit, flag in _MS_FLAGS.items():
            if measurement_status & bit:
                out.add(flag)
    if device_status is not None:
        for bit, flag in _DSS_FLAGS.items():
            if device_status & bit:
                out.add(flag)
    return frozenset(out)


def to_vitals(
    m: PlxContinuous | PlxSpotCheck,
    device_id: str,
    t: float,
    clock: ClockQuality,
    device_time: float | None = None,
) -> list[VitalReading]:
    flags = status_flags(m.measurement_status, m.device_status)
    out = [
        VitalReading(device_id, Vital.SPO2, m.spo2, "%", t, clock, flags, device_time),
        VitalReading(device_id, Vital.PULSE_RATE, m.pulse_rate, "/min", t, clock, flags, device_time),
    ]
    if m.pulse_amplitude_index is not None:
        out.append(
            VitalReading(device_id, Vital.PERFUSION_INDEX, m.pulse_amplitude_index, "%", t, clock, flags, device_time)
        )
    return out
