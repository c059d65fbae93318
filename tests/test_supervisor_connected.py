"""'device_connected' means data can flow: a driver that waits for its device (a passive BLE cuff) is
announced as waiting, and connected only for each visit it reports; a failing one is never connected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from structlog.testing import capture_logs

from gateway.clock import ManualClock
from gateway.driver_api import DeviceContext, Driver, DriverConnectFailed, DriverSettings, DriverSpec
from gateway.records import DeviceEvent, DeviceState, Reading, Vital, VitalReading
from gateway.supervisor import Assignment, BackoffPolicy, Supervisor


class PassiveSettings(DriverSettings):
    driver: Literal["passive"] = "passive"
    scanner_works: bool = True


class PassiveDriver(Driver):
    """Like a passive BLE driver: nothing to open; the device visits, or the scanner cannot start."""

    settings: PassiveSettings

    @property
    def reports_own_connection(self) -> bool:
        return True

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def readings(self) -> AsyncIterator[Reading]:
        if not self.settings.scanner_works:
            raise DriverConnectFailed("scanning on hci0 failed: no BlueZ (is BlueZ running ...)", reason="scan_failed")
        clock = self.ctx.clock
        yield DeviceEvent(self.ctx.device_id, DeviceState.CONNECTED, clock.now(), detail="advertised")
        yield VitalReading(self.ctx.device_id, Vital.SYSTOLIC_BP, 120.0, "mm[Hg]", clock.now())
        yield DeviceEvent(self.ctx.device_id, DeviceState.DISCONNECTED, clock.now(), detail="released")
        await clock.sleep(3600)


SPEC = DriverSpec("passive", PassiveSettings, "tests.test_supervisor_connected:PassiveDriver")


def _supervisor(tmp_path: Path, clock: ManualClock) -> Supervisor:
    async def sink(patient: str, reading: Reading) -> None:
        pass

    def ctx(device_id: str, a: Assignment) -> DeviceContext:
        return DeviceContext(device_id, a.patient, clock, tmp_path)

    backoff = BackoffPolicy(initial_s=0.01, max_s=0.05, healthy_after_s=3600)
    return Supervisor(specs={"passive": SPEC}, sink=sink, clock=clock, context_for=ctx, backoff=backoff)


async def test_a_device_that_never_came_is_not_connected(tmp_path: Path) -> None:
    clock = ManualClock()
    sup = _supervisor(tmp_path, clock)
    with capture_logs() as logs:
        sup.apply({"cuff": Assignment("p", PassiveSettings(id="cuff", scanner_works=False))})
        await clock.run_for(0.5, step=0.001)
        await sup.stop_all()
    names = [e["event"] for e in logs]
    assert names.count("device_retry") >= 3
    assert "device_connected" not in names and "device_disconnected" not in names
    retry = next(e for e in logs if e["event"] == "device_retry")
    assert "is BlueZ running" in retry["error"]


async def test_each_visit_the_driver_reports_is_one_connection(tmp_path: Path) -> None:
    clock = ManualClock()
    sup = _supervisor(tmp_path, clock)
    with capture_logs() as logs:
        sup.apply({"cuff": Assignment("p", PassiveSettings(id="cuff"))})
        await clock.run_for(0.1, step=0.001)
        await sup.stop_all()
    names = [e["event"] for e in logs]
    assert names.index("device_waiting") < names.index("device_connected")
    assert names.count("device_connected") == 1
    assert next(e for e in logs if e["event"] == "device_connected")["detail"] == "advertised"
