"""BLE health drivers: one small class per profile on a shared session loop.

Connected mode (straps, oximeters): ``connect()`` finds the device and subscribes; ``readings()``
streams until the link drops and raises ``DriverDisconnected``.  The supervisor reports the
connect/disconnect and decides when to try again.

Passive mode (cuffs, scales, thermometers, meters): the device is away most of the day and
advertises only when it has a reading.  ``readings()`` waits for the advertisement, connects,
collects, lets the device go (or notices it left) and waits again, reporting each visit as a
``connected``/``disconnected`` event.  Waiting for a device is not a retry: if a connection it
was offered fails, the driver raises ``DriverConnectFailed`` like any other.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from bleak.backends.device import BLEDevice

from drivers.ble import blood_pressure, glucose, heart_rate, plx, polar_pmd, thermometer, weight
from drivers.ble.device_time import CURRENT_TIME, DeviceClock, decode_current_time
from drivers.ble.link import BleLink, Notification
from drivers.ble.settings import (
    BleSettings,
    BloodPressureSettings,
    GlucoseSettings,
    HeartRateSettings,
    PolarEcgSettings,
    PulseOximeterSettings,
    ThermometerSettings,
    WeightSettings,
)
from drivers.ble.wire import DecodeError, DeviceDateTime
from gateway.driver_api import DeviceContext, Driver, DriverConfigError, DriverConnectFailed, DriverDisconnected
from gateway.readings import DeviceEvent, DeviceState, Reading

BATTERY_LEVEL = "00002a19-0000-1000-8000-00805f9b34fb"
BATTERY_LOW_PCT = 20
# Passive mode scans in slices so a cancelled session stops scanning promptly.
PASSIVE_SCAN_SLICE_S = 30.0


class BleDriver(Driver):
    settings: BleSettings
    # Characteristics to subscribe to; at least one must exist on the device.
    SUBSCRIBE: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: DeviceContext, settings: BleSettings) -> None:
        super().__init__(ctx, settings)
        self.link = BleLink(
            settings.address,
            settings.adapter,
            ctx.clock,
            connect_timeout_s=settings.connect_timeout_s,
            queue_size=settings.queue_size,
            name=ctx.device_id,
            log=ctx.log,
        )
        self.device_clock = DeviceClock(ctx.clock)
        self.decode_errors = 0
        # The address stays in the driver: logs and messages carry its keyed tag (gateway.device_tags).
        self.device_tag = ctx.tag(settings.address)
        self.log = ctx.log.bind(device=ctx.device_id, device_tag=self.device_tag)

    @property
    def passive(self) -> bool:
        return self.settings.mode == "passive"

    @property
    def reports_own_connection(self) -> bool:
        return self.passive  # a passive session waits for visits and reports each one itself

    # --- Driver contract -----------------------------------------------------------------------

    async def connect(self) -> None:
        if self.passive:
            return  # the device comes to us when it has a reading
        device = await self.link.find(self.settings.scan_timeout_s)
        if device is None:
            raise DriverConnectFailed(
                f"{self.device_tag} not seen on {self.settings.adapter} within {self.settings.scan_timeout_s} s",
                reason="not_found",
            )
        await self._open(device)

    async def close(self) -> None:
        await self.link.close()

    async def readings(self) -> AsyncIterator[Reading]:
        if not self.passive:
            async for r in self._visit():
                yield r
            return
        while True:
            device = await self.link.find(PASSIVE_SCAN_SLICE_S)
            if device is None:
                continue
            await self._open(device)
            released = False
            try:
                async for r in self._visit():
                    yield r
                released = True
                detail = "released"  # reason codes, not exception text: this goes upstream
            except DriverDisconnected as e:
                detail = e.reason
            await self.link.disconnect()
            yield self._event(DeviceState.DISCONNECTED, detail)
            if released:
                await asyncio.sleep(self.settings.passive_cooldown_s)

    # --- one visit of the device ---------------------------------------------------------------

    async def _open(self, device: BLEDevice) -> None:
        await self.link.connect(device)
        try:
            await self._prepare()
        except BaseException:
            await self.link.close()
            raise

    async def _prepare(self) -> None:
        wanted = [u for u in self.SUBSCRIBE if self.link.has_characteristic(u)]
        if not wanted:
            raise DriverConfigError(
                f"{self.device_tag} offers none of {', '.join(self.SUBSCRIBE)}: wrong driver for this device?",
                reason="wrong_device",
            )
        for uuid in wanted:
            await self.link.subscribe(uuid)

    async def _visit(self) -> AsyncIterator[Reading]:
        if self.passive:
            yield self._event(DeviceState.CONNECTED, "advertised", **self._clock_extra())
        battery = await self._battery()
        if battery is not None:
            yield battery
        await self._start()
        timeout = self.settings.passive_release_s if self.passive else self.settings.idle_timeout_s
        while True:
            n = await self.link.next(timeout)
            if n is None:
                if self.passive:
                    return  # the device has said all it had to say
                raise DriverDisconnected(f"{self.device_tag}: no data for {timeout} s", reason="no_data")
            try:
                out = self._decode(n)
            except DecodeError as e:
                self.decode_errors += 1
                # Logged at 1, 2, 4, 8… rejects: a device sending garbage must not flood the journal.
                if self.decode_errors & (self.decode_errors - 1) == 0:
                    self.log.warning(
                        "ble_payload_rejected",
                        uuid=n.uuid,
                        data=n.data[:64].hex(),
                        error=str(e),
                        rejected_total=self.decode_errors,
                    )
                continue
            for r in out:
                yield r
            # Reached only once the consumer has taken every reading above.
            if await self._delivered(n):
                return

    async def _battery(self) -> DeviceEvent | None:
        if not self.link.has_characteristic(BATTERY_LEVEL):
            return None
        data = await self.link.read(BATTERY_LEVEL)
        if len(data) != 1 or data[0] > 100:
            return None
        state = DeviceState.BATTERY_LOW if data[0] < BATTERY_LOW_PCT else DeviceState.BATTERY_OK
        return self._event(state, f"battery {data[0]} %", battery_pct=float(data[0]))

    async def _calibrate_clock(self) -> None:
        """Read Current Time (if offered) so stored timestamps can be corrected."""
        if not self.link.has_characteristic(CURRENT_TIME):
            return
        try:
            now = decode_current_time(await self.link.read(CURRENT_TIME))
        except DecodeError as e:
            self.log.warning("ble_current_time_rejected", error=str(e))
            return
        correction = self.device_clock.calibrate(now)
        if correction is not None:
            self.log.info("ble_device_clock", **correction.as_dict())

    def _clock_extra(self) -> dict[str, Any]:
        c = self.device_clock.correction
        return {"extra": c.as_dict()} if c is not None else {}

    def _event(self, state: DeviceState, detail: str, **kw: Any) -> DeviceEvent:
        clock = self.ctx.clock
        return DeviceEvent(self.ctx.device_id, state, clock.now(), detail, clock=clock.quality(), **kw)

    # --- profile hooks -------------------------------------------------------------------------

    async def _start(self) -> None:
        """After subscribing: anything the device needs to start sending."""

    def _decode(self, n: Notification) -> list[Reading]:
        raise NotImplementedError

    async def _delivered(self, n: Notification) -> bool:
        """Called once the readings of ``n`` were consumed; True ends the visit (passive mode)."""
        return False

    def _stamp(self, ts: DeviceDateTime | None, n: Notification, clock_not_set: bool = False) -> dict[str, Any]:
        return self._place(ts.as_naive_unix() if ts is not None else None, n, clock_not_set)

    def _place(self, device_time: float | None, n: Notification, clock_not_set: bool = False) -> dict[str, Any]:
        p = self.device_clock.place(device_time, n.received_at, clock_not_set)
        return {"t": p.time, "clock": p.clock, "device_time": p.device_time}


class HeartRateDriver(BleDriver):
    settings: HeartRateSettings
    SUBSCRIBE = (heart_rate.MEASUREMENT,)

    def _decode(self, n: Notification) -> list[Reading]:
        m = heart_rate.decode(n.data)
        return list(heart_rate.to_vitals(m, self.ctx.device_id, n.received_at, self.ctx.clock.quality()))


class PulseOximeterDriver(BleDriver):
    settings: PulseOximeterSettings
    SUBSCRIBE = (plx.CONTINUOUS, plx.SPOT_CHECK)

    async def _prepare(self) -> None:
        await self._calibrate_clock()
        await super()._prepare()

    def _decode(self, n: Notification) -> list[Reading]:
        dev = self.ctx.device_id
        if n.uuid == plx.CONTINUOUS:
            return list(plx.to_vitals(plx.decode_continuous(n.data), dev, n.received_at, self.ctx.clock.quality()))
        m = plx.decode_spot_check(n.data)
        return list(plx.to_vitals(m, dev, **self._stamp(m.timestamp, n, m.device_clock_not_set)))


class BloodPressureDriver(BleDriver):
    settings: BloodPressureSettings
    SUBSCRIBE = (blood_pressure.MEASUREMENT,)

    async def _prepare(self) -> None:
        await self._calibrate_clock()
        await super()._prepare()

    def _decode(self, n: Notification) -> list[Reading]:
        m = blood_pressure.decode(n.data)
        return list(blood_pressure.to_vitals(m, self.ctx.device_id, **self._stamp(m.timestamp, n)))


class ThermometerDriver(BleDriver):
    settings: ThermometerSettings
    SUBSCRIBE = (thermometer.MEASUREMENT,)

    async def _prepare(self) -> None:
        await self._calibrate_clock()
        await super()._prepare()

    def _decode(self, n: Notification) -> list[Reading]:
        m = thermometer.decode(n.data)
        return list(thermometer.to_vitals(m, self.ctx.device_id, **self._stamp(m.timestamp, n)))


class WeightDriver(BleDriver):
    settings: WeightSettings
    SUBSCRIBE = (weight.MEASUREMENT,)

    async def _prepare(self) -> None:
        await self._calibrate_clock()
        await super()._prepare()

    def _decode(self, n: Notification) -> list[Reading]:
        m = weight.decode(n.data)
        return list(weight.to_vitals(m, self.ctx.device_id, **self._stamp(m.timestamp, n)))


class SequenceStore:
    """The last glucose sequence number the gateway holds, in a small JSON file replaced atomically."""

    def __init__(self, path: Path, address: str) -> None:
        self.path = path
        self.address = address.upper()

    def load(self) -> int | None:
        try:
            obj = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable state: fetch everything rather than miss readings
        # A different meter at this device id starts from scratch.
        if not isinstance(obj, dict) or obj.get("address") != self.address:
            return None
        seq = obj.get("last_sequence")
        return seq if isinstance(seq, int) and 0 <= seq <= 0xFFFF else None

    def save(self, seq: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"address": self.address, "last_sequence": seq}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class GlucoseDriver(BleDriver):
    """Fetches the records the gateway does not hold yet through the RACP, then listens (connected
    mode) or lets the meter go (passive mode).  The sequence number is saved only after the consumer
    took the reading, so a crash repeats at most the reading in flight, and never skips one.

    When the meter has nothing newer than the last number held, the driver asks for its newest
    record: a number *below* the one held means the meter's numbering started again (factory reset,
    replaced meter with the same address), and everything it stores is fetched once more."""

    settings: GlucoseSettings
    SUBSCRIBE = (glucose.MEASUREMENT, glucose.RACP)
    STATE_FILE = "ble-glucose.json"

    def __init__(self, ctx: DeviceContext, settings: GlucoseSettings) -> None:
        super().__init__(ctx, settings)
        self.store = SequenceStore(ctx.state_dir / self.STATE_FILE, settings.address)
        self.last_held: int | None = None
        self.racp_result: glucose.RacpResult | None = None
        self._pending_seq: int | None = None
        self._probing = False
        self._newest_on_meter: int | None = None

    async def _prepare(self) -> None:
        for uuid in self.SUBSCRIBE:
            if not self.link.has_characteristic(uuid):
                raise DriverConfigError(f"{self.device_tag} has no {uuid}: not a glucose meter?", reason="wrong_device")
        await self._calibrate_clock()
        await super()._prepare()

    async def _start(self) -> None:
        self.last_held = await asyncio.to_thread(self.store.load)
        await self._request(glucose.racp_records_after(self.last_held))

    async def _request(self, request: bytes) -> None:
        self.racp_result = None
        self.log.info("ble_glucose_fetch", last_held=self.last_held, request=request.hex())
        await self.link.write(glucose.RACP, request)

    def _decode(self, n: Notification) -> list[Reading]:
        self._pending_seq = None
        if n.uuid == glucose.RACP:
            response = glucose.decode_racp(n.data)
            if response.done:
                self.racp_result = response.result
            return []
        m = glucose.decode(n.data)
        if self._probing:
            self._newest_on_meter = m.sequence
        if self.last_held is not None and m.sequence <= self.last_held:
            if not self._probing:
                self.log.info("ble_glucose_repeat_skipped", sequence=m.sequence, last_held=self.last_held)
            return []
        self._pending_seq = m.sequence
        time_fault = m.status is not None and bool(m.status & (1 << 11))
        # The meter's user-facing time (base time + offset) is the device's own time of the reading.
        return list(glucose.to_vitals(m, self.ctx.device_id, **self._place(m.device_time, n, time_fault)))

    async def _delivered(self, n: Notification) -> bool:
        if self._pending_seq is not None:
            seq, self._pending_seq = self._pending_seq, None
            await self.ctx.checkpoint()  # the reading is on disk before the meter's place is moved on
            await asyncio.to_thread(self.store.save, seq)
            self.last_held = seq
            return False
        if n.uuid != glucose.RACP or self.racp_result is None:
            return False
        result = self.racp_result
        if self._probing:
            self._probing = False
            newest, self._newest_on_meter = self._newest_on_meter, None
            if newest is not None and self.last_held is not None and newest < self.last_held:
                self.log.warning("ble_glucose_numbering_restarted", newest_on_meter=newest, last_held=self.last_held)
                self.last_held = None
                await self._request(glucose.racp_all_records())
                return False
        elif result is glucose.RacpResult.NO_RECORDS_FOUND and self.last_held is not None:
            self._probing = True
            self._newest_on_meter = None
            await self._request(glucose.racp_last_record())
            return False
        ok = result in (glucose.RacpResult.SUCCESS, glucose.RacpResult.NO_RECORDS_FOUND)
        level = self.log.info if ok else self.log.warning
        level("ble_glucose_fetch_done", result=result.name.lower(), last_held=self.last_held)
        return self.passive


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
