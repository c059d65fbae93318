"""A scripted device for the supervisor tests: it drops, crashes, ends or streams, as told."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from gateway.driver_api import Driver, DriverDisconnected, DriverFinished, DriverSettings, DriverSpec
from gateway.records import Reading, Vital, VitalReading


class ScriptSettings(DriverSettings):
    driver: Literal["script"] = "script"
    behaviour: Literal["flaky", "steady", "buggy", "finite"] = "steady"


CONNECTS: dict[str, int] = {}


class ScriptDriver(Driver):
    """A device whose behaviour the test scripts: it drops, crashes, or streams forever."""

    settings: ScriptSettings

    async def connect(self) -> None:
        CONNECTS[self.ctx.device_id] = CONNECTS.get(self.ctx.device_id, 0) + 1

    async def close(self) -> None:
        pass

    async def readings(self) -> AsyncIterator[Reading]:
        b = self.settings.behaviour
        for i in range(1000):
            yield VitalReading(self.ctx.device_id, Vital.SPO2, 97.0, "%", float(i))
            await asyncio.sleep(0.001)
            if b == "flaky" and i == 2:
                raise DriverDisconnected("cable pulled")
            if b == "buggy" and i == 1:
                raise ZeroDivisionError("a bug in a decoder")
            if b == "finite" and i == 3:
                raise DriverFinished("end of recording")


SPEC = DriverSpec("script", ScriptSettings, "tests.supervisor_script:ScriptDriver")
