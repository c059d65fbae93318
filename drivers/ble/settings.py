"""Settings of the BLE drivers and their registry entries.

Kept apart from the drivers and free of bleak, so validating a config never imports the radio
stack (``gateway.driver_api.DriverSpec`` imports the driver class lazily).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.driver_api import DriverSettings, DriverSpec

Mode = Literal["connected", "passive"]


_ADDRESS = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"
_ADAPTER = r"^hci[0-9]{1,2}$"


class BleSettings(DriverSettings):
    address: str = Field(pattern=_ADDRESS, description="Device address, e.g. C4:7C:8D:6A:12:3F")
    adapter: str = Field("hci0", pattern=_ADAPTER, description="Local Bluetooth adapter")
    mode: Mode = Field(
        "connected",
        description="connected: stay connected, a lost link ends the session; passive: wait for the device "
        "to advertise (it has a reading), connect, collect, let it go, wait again",
    )
    scan_timeout_s: float = Field(
        20.0, gt=0, le=600, description="connected mode: how long to look for the device before giving up"
    )
    connect_timeout_s: float = Field(20.0, gt=0, le=120, description="One connection attempt (BlueZ level)")
    idle_timeout_s: float | None = Field(
        None,
        gt=0,
        description="connected mode: no data for this long = link lost; passive mode: release the device "
        "after this long without data (default: never / 60 s)",
    )
    passive_cooldown_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="passive mode: after the gateway lets a device go, ignore it this long (meters and cuffs "
        "often keep advertising for a while after the hand-over; reconnecting would drain them)",
    )
    queue_size: int = Field(1024, ge=16, le=65536, description="Notifications buffered before the oldest are dropped")

    # The patterns stay in the JSON Schema for editors; these say what is wrong in words first.
    @field_validator("address", mode="before")
    @classmethod
    def _address_words(cls, v: object) -> object:
        if isinstance(v, str) and not re.fullmatch(_ADDRESS, v):
            raise ValueError(
                "a BLE address is six pairs of hex digits separated by colons, e.g. A0:9E:1A:12:34:56 "
                "(`iomt-gateway scan` lists the devices in range with their addresses)"
            )
        return v

    @field_validator("adapter", mode="before")
    @classmethod
    def _adapter_words(cls, v: object) -> object:
        if isinstance(v, str) and not re.fullmatch(_ADAPTER, v):
            raise ValueError("must name a Bluetooth adapter as hci0, hci1, ... (`hciconfig` or `bluetoothctl list`)")
        return v

    def exclusive_link(self) -> tuple[str, str, str] | None:
        return ("address", "BLE address", self.address.upper())

    @property
    def hardware_ids(self) -> tuple[str, ...]:
        return (self.address,)

    @property
    def passive_release_s(self) -> float:
        return self.idle_timeout_s if self.idle_timeout_s is not None else 60.0

    @property
    def streams(self) -> bool:
        return self.mode == "connected"  # passive devices only come by when they have a reading


class HeartRateSettings(BleSettings):
    driver: Literal["ble-heart-rate"] = "ble-heart-rate"
    idle_timeout_s: float | None = Field(10.0, gt=0, description="A strap notifies every second")


class PulseOximeterSettings(BleSettings):
    driver: Literal["ble-pulse-oximeter"] = "ble-pulse-oximeter"
    idle_timeout_s: float | None = Field(None, gt=0)


def _user_id() -> Any:
    return Field(
        None,
        ge=0,
        le=254,
        description="A device several people share: this patient's user number on it, as the device "
        "numbers its users. Readings it marks for another user, or for an unknown one (a guest), are "
        "dropped: they are not this patient's. Unset: every reading is taken, and the journal says "
        "when the device marks readings with a user",
    )


class BloodPressureSettings(BleSettings):
    driver: Literal["ble-blood-pressure"] = "ble-blood-pressure"
    mode: Mode = "passive"
    user_id: int | None = _user_id()


class ThermometerSettings(BleSettings):
    driver: Literal["ble-thermometer"] = "ble-thermometer"
    mode: Mode = "passive"


class WeightSettings(BleSettings):
    driver: Literal["ble-weight"] = "ble-weight"
    mode: Mode = "passive"
    user_id: int | None = _user_id()


class GlucoseSettings(BleSettings):
    driver: Literal["ble-glucose"] = "ble-glucose"
    mode: Mode = "passive"


class PolarEcgSettings(BleSettings):
    driver: Literal["polar-ecg"] = "polar-ecg"
    idle_timeout_s: float | None = Field(5.0, gt=0, description="ECG frames arrive every ~0.5 s")

    @model_validator(mode="after")
    def _streams(self) -> PolarEcgSettings:
        if self.mode != "connected":
            raise ValueError("polar-ecg streams continuously: mode must be 'connected'")
        return self


def _spec(name: str, settings: type[BleSettings], factory: str, summary: str) -> DriverSpec:
    return DriverSpec(name=name, settings=settings, factory=f"drivers.ble.{factory}", summary=summary)


_PROFILE = "driver:ProfileDriver"  # the standard profiles: one driver, a table row each (driver.PROFILES)
HEART_RATE_SPEC = _spec("ble-heart-rate", HeartRateSettings, _PROFILE, "BLE Heart Rate profile (0x180D)")
PULSE_OXIMETER_SPEC = _spec(
    "ble-pulse-oximeter", PulseOximeterSettings, _PROFILE, "BLE Pulse Oximeter profile (0x1822)"
)
BLOOD_PRESSURE_SPEC = _spec(
    "ble-blood-pressure", BloodPressureSettings, _PROFILE, "BLE Blood Pressure profile (0x1810)"
)
THERMOMETER_SPEC = _spec("ble-thermometer", ThermometerSettings, _PROFILE, "BLE Health Thermometer profile (0x1809)")
WEIGHT_SPEC = _spec("ble-weight", WeightSettings, _PROFILE, "BLE Weight Scale profile (0x181D)")
GLUCOSE_SPEC = _spec(
    "ble-glucose", GlucoseSettings, "glucose_racp:GlucoseDriver", "BLE Glucose profile (0x1808) with RACP"
)
POLAR_ECG_SPEC = _spec("polar-ecg", PolarEcgSettings, "polar_ecg:PolarEcgDriver", "Polar H10 raw ECG over PMD")
