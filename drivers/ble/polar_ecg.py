"""Polar H10 raw ECG over the Polar Measurement Data (PMD) service."""

from __future__ import annotations

from drivers.ble import polar_pmd
from drivers.ble.driver import BleDriver
from drivers.ble.link import Notification
from drivers.ble.settings import PolarEcgSettings
from gateway.driver_api import DeviceContext, DriverConfigError, DriverConnectFailed
from gateway.readings import Reading


class PolarEcgDriver(BleDriver):
    settings: PolarEcgSettings
    SUBSCRIBE = (polar_pmd.CONTROL_POINT, polar_pmd.DATA)

    def __init__(self, ctx: DeviceContext, settings: PolarEcgSettings) -> None:
        super().__init__(ctx, settings)
        self.timeline = polar_pmd.EcgTimeline(ctx.device_id)

    async def _prepare(self) -> None:
        for uuid in self.SUBSCRIBE:
            if not self.link.has_characteristic(uuid):
                raise DriverConfigError(f"{self.device_tag} has no PMD {uuid}: not a Polar H10?", reason="wrong_device")
        await super()._prepare()

    async def _start(self) -> None:
        self.timeline = polar_pmd.EcgTimeline(self.ctx.device_id)  # a new link has a new time line
        await self.link.write(polar_pmd.CONTROL_POINT, polar_pmd.START_ECG)

    def _decode(self, n: Notification) -> list[Reading]:
        if n.uuid == polar_pmd.CONTROL_POINT:
            r = polar_pmd.decode_control(n.data)
            if not r.ok:
                raise DriverConnectFailed(f"strap refused to start ECG: {r.error.name.lower()}")
            return []
        frame = polar_pmd.decode_ecg(n.data)
        first = self.timeline.offset_s is None
        block = self.timeline.block(frame, n.received_at, self.ctx.clock.quality())
        if first:
            self.log.info("polar_ecg_clock", sensor_offset_s=round(self.timeline.offset_s or 0.0, 3))
        return [block]
