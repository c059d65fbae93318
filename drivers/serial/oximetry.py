"""Readings common to the serial devices: SpO2 + pulse-rate pairs and sensor/battery state events."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.readings import (
    VITAL_UNITS,
    ClockQuality,
    DeviceEvent,
    DeviceFlag,
    DeviceState,
    Reading,
    Vital,
    VitalReading,
)


@dataclass
class StateEvents:
    """Sensor-off and battery transitions become events, once per change, not once per frame."""

    device_id: str
    sensor_off: bool | None = None
    battery_low: bool | None = None

    def update(
        self, flags: frozenset[DeviceFlag], t: float, clock: ClockQuality, out: list[Reading], battery: bool
    ) -> None:
        lead_off = DeviceFlag.LEAD_OFF in flags
        off = lead_off or DeviceFlag.SENSOR_OFF in flags
        if off != self.sensor_off:
            if off or self.sensor_off is not None:
                state = DeviceState.SENSOR_OFF if off else DeviceState.SENSOR_ON
                detail = ("lead off" if lead_off else "sensor disconnected") if off else ""
                out.append(DeviceEvent(self.device_id, state, t, detail, clock=clock))
            self.sensor_off = off
        if battery:
            low = bool(flags & {DeviceFlag.BATTERY_LOW, DeviceFlag.BATTERY_CRITICAL})
            if low != self.battery_low:
                if low or self.battery_low is not None:
                    detail = "critical" if DeviceFlag.BATTERY_CRITICAL in flags else ""
                    state = DeviceState.BATTERY_LOW if low else DeviceState.BATTERY_OK
                    out.append(DeviceEvent(self.device_id, state, t, detail, clock=clock))
                self.battery_low = low


def oximeter_vitals(
    dev: str, pr: int | None, spo2: int | None, flags: frozenset[DeviceFlag], t: float, clock: ClockQuality
) -> list[Reading]:
    return [
        VitalReading(dev, Vital.SPO2, None if spo2 is None else float(spo2), VITAL_UNITS[Vital.SPO2], t, clock, flags),
        VitalReading(
            dev, Vital.PULSE_RATE, None if pr is None else float(pr), VITAL_UNITS[Vital.PULSE_RATE], t, clock, flags
        ),
    ]
