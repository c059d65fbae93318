"""What a driver yields: waveform sample blocks, scalar vitals with units, device events.

Plain frozen dataclasses (cheap to build at 75 frames/s per device; the two built most often
get ``fast_init``) and the enums they use.
Drivers import these and nothing of the wire format: the outbound records (pydantic models,
serialised upstream) are in ``gateway.records``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.frozen_init import fast_init

if TYPE_CHECKING:  # numpy is only needed by whoever builds sample blocks
    import numpy as np
    import numpy.typing as npt


class ClockQuality(enum.StrEnum):
    """How far a timestamp can be trusted.

    A Raspberry Pi has no RTC: until NTP has synchronised the clock, ``time.time()`` may be
    1970 or whatever was saved at shutdown.  Such times are marked ``unsynced`` and never
    silently treated as real.
    """

    SYNCED = "synced"  # host clock disciplined by NTP (or declared trustworthy in config)
    UNSYNCED = "unsynced"  # host clock not (yet) synchronised
    DEVICE = "device"  # timestamp taken from the device's own clock, as sent
    CORRECTED = "corrected"  # device timestamp shifted by a measured offset to host time


class Vital(enum.StrEnum):
    """Scalar measurements the gateway understands, with their UCUM unit in ``VITAL_UNITS``."""

    HEART_RATE = "heart_rate"
    PULSE_RATE = "pulse_rate"
    SPO2 = "spo2"
    RR_INTERVAL = "rr_interval"
    HRV_SDNN = "hrv_sdnn"
    HRV_RMSSD = "hrv_rmssd"
    PERFUSION_INDEX = "perfusion_index"
    SYSTOLIC_BP = "systolic_bp"
    DIASTOLIC_BP = "diastolic_bp"
    MEAN_BP = "mean_bp"
    BODY_TEMPERATURE = "body_temperature"
    BODY_WEIGHT = "body_weight"
    BODY_HEIGHT = "body_height"
    BMI = "bmi"
    GLUCOSE = "glucose"
    RESPIRATORY_RATE = "respiratory_rate"
    ENERGY_EXPENDED = "energy_expended"


VITAL_UNITS: dict[Vital, str] = {
    Vital.HEART_RATE: "/min",
    Vital.PULSE_RATE: "/min",
    Vital.SPO2: "%",
    Vital.RR_INTERVAL: "ms",
    Vital.HRV_SDNN: "ms",
    Vital.HRV_RMSSD: "ms",
    Vital.PERFUSION_INDEX: "%",
    Vital.SYSTOLIC_BP: "mm[Hg]",
    Vital.DIASTOLIC_BP: "mm[Hg]",
    Vital.MEAN_BP: "mm[Hg]",
    Vital.BODY_TEMPERATURE: "Cel",
    Vital.BODY_WEIGHT: "kg",
    Vital.BODY_HEIGHT: "m",
    Vital.BMI: "kg/m2",
    Vital.GLUCOSE: "mg/dL",
    Vital.RESPIRATORY_RATE: "/min",
    Vital.ENERGY_EXPENDED: "kJ",
}


class DeviceFlag(enum.StrEnum):
    """Status bits a device reports alongside a value (union of the profiles we decode)."""

    SENSOR_OFF = "sensor_off"
    SENSOR_FAULT = "sensor_fault"
    LEAD_OFF = "lead_off"
    SATURATED = "saturated"  # the front-end's amplifier or ADC at its rail: its samples say nothing
    ARTIFACT = "artifact"
    OUT_OF_TRACK = "out_of_track"
    SEARCHING = "searching"
    LOW_PERFUSION = "low_perfusion"
    MARGINAL_PERFUSION = "marginal_perfusion"
    LOW_SIGNAL_QUALITY = "low_signal_quality"
    QUESTIONABLE = "questionable"  # the device doubts the value but gives it as the patient's
    INVALID = "invalid"  # the device says the measurement is not valid (not a value to use)
    NOT_PATIENT = "not_patient"  # demonstration, test, calibration or control-solution data
    BATTERY_LOW = "battery_low"
    BATTERY_CRITICAL = "battery_critical"
    DEVICE_ALARM = "device_alarm"
    BODY_MOVEMENT = "body_movement"
    CUFF_LOOSE = "cuff_loose"
    IRREGULAR_PULSE = "irregular_pulse"
    IMPROPER_POSITION = "improper_position"


# Flags under which a device itself says its value is not to be trusted, or is not the patient's:
# such a reading drives no alarm, summary value or billing evidence.
INVALIDATING_FLAGS = frozenset(
    {
        DeviceFlag.SENSOR_OFF,
        DeviceFlag.SENSOR_FAULT,
        DeviceFlag.LEAD_OFF,
        DeviceFlag.ARTIFACT,
        DeviceFlag.OUT_OF_TRACK,
        DeviceFlag.SEARCHING,
        DeviceFlag.INVALID,
        DeviceFlag.NOT_PATIENT,
    }
)


@fast_init  # built ten times a second per waveform channel
@dataclass(frozen=True, slots=True)
class SampleBlock:
    """A contiguous run of waveform samples from one channel of one device.

    ``first_index`` counts samples since the session started; a block whose ``first_index`` is
    not the previous block's end marks a gap (``gap_before``) — lost samples are never glued.
    ``pace``: offsets into ``samples`` where the device detected a pacemaker's pulse (the first
    sample each one reaches), ascending; the ECG channel holds them out (``pace_blanking``).
    ``flags``: what the device says of these samples (``LEAD_OFF``, ``SATURATED``, ...).  The ECG
    channel reads no rhythm in samples flagged lead off or saturated; a driver that flags lead off
    also reports it as a ``SENSOR_OFF`` event, which is what raises the technical alarm.
    """

    device_id: str
    channel: str  # "ecg", "pleth", ...
    sample_rate_hz: float
    first_sample_time: float  # Unix seconds (UTC) of samples[0]
    samples: npt.NDArray[np.float64]  # physical units, see ``unit``
    unit: str  # UCUM, e.g. "uV", "mV", "1" for unitless pleth
    first_index: int = 0
    gap_before: bool = False
    clock: ClockQuality = ClockQuality.SYNCED
    flags: frozenset[DeviceFlag] = frozenset()  # the usual empty one is shared: no set built per block
    pace: tuple[int, ...] = ()

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate_hz


@fast_init  # two per heartbeat from an ECG channel
@dataclass(frozen=True, slots=True)
class VitalReading:
    """One scalar measurement. ``value`` is None when the device says "no value"."""

    device_id: str
    vital: Vital
    value: float | None
    unit: str
    time: float  # Unix seconds (UTC) of the measurement
    clock: ClockQuality = ClockQuality.SYNCED
    flags: frozenset[DeviceFlag] = frozenset()
    # A device-supplied timestamp, kept verbatim when ``time`` was corrected from it.
    device_time: float | None = None


class DeviceState(enum.StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    SENSOR_OFF = "sensor_off"
    SENSOR_ON = "sensor_on"
    BATTERY_LOW = "battery_low"
    BATTERY_OK = "battery_ok"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A change in a device's state, reported by its driver or by the supervisor."""

    device_id: str
    state: DeviceState
    time: float
    detail: str = ""
    battery_pct: float | None = None
    clock: ClockQuality = ClockQuality.SYNCED
    extra: dict[str, Any] = field(default_factory=dict)


Reading = SampleBlock | VitalReading | DeviceEvent
