"""A scripted device for the supervisor tests: it drops, crashes, ends, refuses or streams, as told.

It streams one reading per millisecond of its context's clock (a ManualClock the test moves).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from gateway.driver_api import (
    Driver,
    DriverConnectFailed,
    DriverDisconnected,
    DriverError,
    DriverFinished,
    DriverSettings,
    DriverSpec,
)
from gateway.records import Reading, Vital, VitalReading


class ScriptSettings(DriverSettings):
    driver: Literal["script"] = "script"
    behaviour: Literal["flaky", "steady", "buggy", "finite", "refused", "drops", "fatal"] = "steady"
    drop_after_s: float = 1.0  # "drops": the link drops after this long


class Unsupported(DriverError):
    """A plug-in driver's error that no retry can fix."""

    retryable = False


CONNECTS: dict[str, int] = {}
CONNECT_TIMES: dict[str, list[float]] = {}  # the clock's monotonic time of each connect attempt


class ScriptDriver(Driver):
    """A device whose behaviour the test scripts: it drops, crashes, or streams forever."""

    settings: ScriptSettings

    async def connect(self) -> None:
        CONNECTS[self.ctx.device_id] = CONNECTS.get(self.ctx.device_id, 0) + 1
        CONNECT_TIMES.setdefault(self.ctx.device_id, []).append(self.ctx.clock.monotonic())
        if self.settings.behaviour == "refused":
            raise DriverConnectFailed("nobody answers")
        if self.settings.behaviour == "fatal":
            raise Unsupported("this firmware speaks another protocol")

    async def close(self) -> None:
        pass

    async def readings(self) -> AsyncIterator[Reading]:
        b = self.settings.behaviour
        started = self.ctx.clock.monotonic()
        for i in range(1_000_000 if b == "drops" else 1000):
            yield VitalReading(self.ctx.device_id, Vital.SPO2, 97.0, "%", float(i))
            await self.ctx.clock.sleep(0.001)
            if b == "flaky" and i == 2:
                raise DriverDisconnected("cable pulled")
            if b == "buggy" and i == 1:
                raise ZeroDivisionError("a bug in a decoder")
            if b == "finite" and i == 3:
                raise DriverFinished("end of recording")
            if b == "drops" and self.ctx.clock.monotonic() - started >= self.settings.drop_after_s:
                raise DriverDisconnected("out of range")


SPEC = DriverSpec("script", ScriptSettings, "tests.supervisor_script:ScriptDriver")
