"""Weight Measurement 0x2A9D (Weight Scale service 0x181D, indicate)."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.wire import DeviceDateTime, Reader
from gateway.readings import ClockQuality, Vital, VitalReading

SERVICE = "0000181d-0000-1000-8000-00805f9b34fb"
MEASUREMENT = "00002a9d-0000-1000-8000-00805f9b34fb"

KG_PER_LB = 0.45359237
M_PER_IN = 0.0254
WEIGHT_UNMEASURED = 0xFFFF  # "measurement unsuccessful"


@dataclass(frozen=True, slots=True)
class WeightMeasurement:
    weight: float | None  # in ``unit``; None when the scale says the measurement failed
    unit: str  # "kg" or "lb", as sent
    timestamp: DeviceDateTime | None = None
    user_id: int | None = None
    bmi: float | None = None
    height: float | None = None  # m (SI) or in (imperial)

    @property
    def weight_kg(self) -> float | None:
        if self.weight is None or self.unit == "kg":
            return self.weight
        return round(self.weight * KG_PER_LB, 3)

    @property
    def height_m(self) -> float | None:
        if self.height is None or self.unit == "kg":
            return self.height
        return round(self.height * M_PER_IN, 3)


def decode(data: bytes) -> WeightMeasurement:
    r = Reader(data)
    flags = r.u8("flags")
    imperial = bool(flags & 0x01)
    raw = r.u16("weight")
    weight = None if raw == WEIGHT_UNMEASURED else round(raw * (0.01 if imperial else 0.005), 3)
    ts = r.date_time("timestamp") if flags & 0x02 else None
    user = r.u8("user id") if flags & 0x04 else None
    bmi = height = None
    if flags & 0x08:
        bmi = round(r.u16("BMI") * 0.1, 1)
        h = r.u16("height")
        height = round(h * 0.1, 1) if imperial else round(h * 0.001, 3)
    return WeightMeasurement(weight, "lb" if imperial else "kg", ts, user, bmi, height)


def to_vitals(
    m: WeightMeasurement,
    device_id: str,
    t: float,
    clock: ClockQuality,
    device_time: float | None = None,
) -> list[VitalReading]:
    out = [VitalReading(device_id, Vital.BODY_WEIGHT, m.weight_kg, "kg", t, clock, device_time=device_time)]
    if m.bmi is not None:
        out.append(VitalReading(device_id, Vital.BMI, m.bmi, "kg/m2", t, clock, device_time=device_time))
    if m.height_m is not None:
        out.append(VitalReading(device_id, Vital.BODY_HEIGHT, m.height_m, "m", t, clock, device_time=device_time))
    return out
