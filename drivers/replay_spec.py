"""Settings of the replay driver (kept apart from the driver so validating a config stays cheap)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gateway.driver_api import DriverSettings, DriverSpec


class ReplaySettings(DriverSettings):
    driver: Literal["replay"] = "replay"
    vitals: Path | None = Field(
        None, description="JSON-lines recording of vitals/events (relative to the config file)"
    )
    ecg: Path | None = Field(None, description="WFDB record (path without extension) to stream as ECG")
    ecg_channel: int = Field(0, ge=0, description="Signal index in the WFDB record")
    block_ms: int = Field(250, ge=10, le=5000, description="ECG block length, as a strap would send")
    speed: float = Field(1.0, ge=0, description="1 = real time, N = N times faster, 0 = as fast as possible")
    loop: bool = Field(False, description="Start again at the end (time keeps running forward)")
    start_time: datetime | None = Field(
        None, description="Recording time of t=0 (ISO 8601 with offset); default: when the session starts"
    )

    @model_validator(mode="after")
    def _something(self) -> ReplaySettings:
        if self.vitals is None and self.ecg is None:
            raise ValueError("give at least one of 'vitals' or 'ecg'")
        if self.start_time is not None and self.start_time.tzinfo is None:
            raise ValueError("start_time needs a UTC offset, e.g. 2026-03-01T08:00:00+00:00")
        return self


SPEC = DriverSpec(
    name="replay",
    settings=ReplaySettings,
    factory="drivers.replay:ReplayDriver",
    summary="Plays a recording from hil_fixtures/ through the real pipeline",
)
