"""Heart Rate Measurement 0x2A37 (Heart Rate service 0x180D, notify)."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.wire import DecodeError, Reader
from gateway.readings import ClockQuality, DeviceFlag, Vital, VitalReading

SERVICE = "0000180d-0000-1000-8000-00805f9b34fb"
MEASUREMENT = "00002a37-0000-1000-8000-00805f9b34fb"

_HR_U16 = 0x01
_CONTACT_DETECTED = 0x02
_CONTACT_SUPPORTED = 0x04
_ENERGY = 0x08
_RR = 0x10


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    heart_rate: int  # beats per minute
    contact_supported: bool
    contact_detected: bool  # meaningful only when supported
    energy_expended_kj: int | None
    rr_intervals_1024: tuple[int, ...]  # raw, unit 1/1024 s

    @property
    def rr_intervals_ms(self) -> tuple[float, ...]:
        return tuple(rr * 1000.0 / 1024.0 for rr in self.rr_intervals_1024)


def decode(data: bytes) -> HeartRateMeasurement:
    """Reserved flag bits and trailing bytes are ignored, as the profile asks of a receiver (room
    for future fields); a payload shorter than its flags promise is rejected."""
    r = Reader(data)
    flags = r.u8("flags")
    hr = r.u16("heart rate") if flags & _HR_U16 else r.u8("heart rate")
    energy = r.u16("energy expended") if flags & _ENERGY else None
    rr: list[int] = []
    if flags & _RR:
        if r.remaining == 0 or r.remaining % 2:
            raise DecodeError(f"RR intervals need whole uint16 values, {r.remaining} bytes left")
        while r.remaining:
            rr.append(r.u16("RR interval"))
    supported = bool(flags & _CONTACT_SUPPORTED)
    return HeartRateMeasurement(
        heart_rate=hr,
        contact_supported=supported,
        contact_detected=supported and bool(flags & _CONTACT_DETECTED),
        energy_expended_kj=energy,
        rr_intervals_1024=tuple(rr),
    )


def to_vitals(m: HeartRateMeasurement, device_id: str, t: float, clock: ClockQuality) -> list[VitalReading]:
    # A strap that can tell skin contact and reports none is counting noise: keep the value, flag it.
    flags = frozenset({DeviceFlag.LEAD_OFF}) if m.contact_supported and not m.contact_detected else frozenset()
    out = [VitalReading(device_id, Vital.HEART_RATE, float(m.heart_rate), "/min", t, clock, flags)]
    out += [VitalReading(device_id, Vital.RR_INTERVAL, ms, "ms", t, clock, flags) for ms in m.rr_intervals_ms]
    if m.energy_expended_kj is not None:
        out.append(VitalReading(device_id, Vital.ENERGY_EXPENDED, float(m.energy_expended_kj), "kJ", t, clock))
    return out
