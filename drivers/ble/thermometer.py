"""Temperature Measurement 0x2A1C (Health Thermometer service 0x1809, indicate)."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.wire import DeviceDateTime, Reader, in_range
from gateway.readings import ClockQuality, Vital, VitalReading

SERVICE = "00001809-0000-1000-8000-00805f9b34fb"
MEASUREMENT = "00002a1c-0000-1000-8000-00805f9b34fb"

# Wide enough for any clinical thermometer, narrow enough to reject a garbage FLOAT.
CELSIUS_RANGE = (-40.0, 110.0)
FAHRENHEIT_RANGE = (-40.0, 230.0)

TEMPERATURE_TYPES = {
    1: "armpit",
    2: "body",
    3: "ear",
    4: "finger",
    5: "gastro-intestinal tract",
    6: "mouth",
    7: "rectum",
    8: "toe",
    9: "tympanum",
}


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    value: float | None
    unit: str  # "Cel" or "[degF]", as sent
    timestamp: DeviceDateTime | None = None
    temperature_type: int | None = None

    @property
    def celsius(self) -> float | None:
        if self.value is None or self.unit == "Cel":
            return self.value
        return round((self.value - 32.0) * 5.0 / 9.0, 2)


def decode(data: bytes) -> TemperatureMeasurement:
    r = Reader(data)
    flags = r.u8("flags")
    fahrenheit = bool(flags & 0x01)
    value = in_range("temperature", r.float32("temperature"), *(FAHRENHEIT_RANGE if fahrenheit else CELSIUS_RANGE))
    ts = r.date_time("timestamp") if flags & 0x02 else None
    ttype = r.u8("temperature type") if flags & 0x04 else None
    return TemperatureMeasurement(value, "[degF]" if fahrenheit else "Cel", ts, ttype)


def to_vitals(
    m: TemperatureMeasurement,
    device_id: str,
    t: float,
    clock: ClockQuality,
    device_time: float | None = None,
) -> list[VitalReading]:
    return [VitalReading(device_id, Vital.BODY_TEMPERATURE, m.celsius, "Cel", t, clock, device_time=device_time)]
