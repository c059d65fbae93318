"""BLE health drivers: the session loop shared by every profile, and the standard profiles as a table.

The five standard profiles (heart rate, pulse oximeter, blood pressure, thermometer, weight) differ
only in what they subscribe to, whether the device keeps a clock of its own and how a notification
becomes readings: ``PROFILES`` holds that, ``ProfileDriver`` runs it.  The glucose meter (RACP
record transfer) and the Polar H10 (PMD control point) need more and have their own modules,
``glucose_racp.py`` and ``polar_ecg.py``.

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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from bleak.backends.device import BLEDevice

from drivers.ble import blood_pressure, heart_rate, plx, thermometer, weight
from drivers.ble.device_time import CURRENT_TIME, DeviceClock, decode_current_time
from drivers.ble.link import BleLink, Notification
from drivers.ble.sequence_store import SequenceStore
from drivers.ble.settings import BleSettings
from drivers.ble.wire import DecodeError, DeviceDateTime
from gateway.driver_api import DeviceContext, Driver, DriverConfigError, DriverConnectFailed, DriverDisconnected
from gateway.readings import DeviceEvent, DeviceState, Reading, VitalReading

BATTERY_LEVEL = "00002a19-0000-1000-8000-00805f9b34fb"
BATTERY_LOW_PCT = 20
# Passive mode scans in slices so a cancelled session stops scanning promptly.
PASSIVE_SCAN_SLICE_S = 30.0


class BleDriver(Driver):
    settings: BleSettings
    # Characteristics to subscribe to; at least one must exist on the device.
    SUBSCRIBE: tuple[str, ...] = ()

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
        self.device_clock = DeviceClock(ctx.clock, ctx.timezone)
        self.decode_errors = 0
        self._users_seen: set[int | None] = set()
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

    def _for_patient(self, user: int | None, readings: list[VitalReading]) -> list[Reading]:
        """A shared cuff's or scale's readings of this patient (``user_id``): those the device marks
        for another user, or the unknown user (255), are someone else's and are dropped; one with no
        user field is taken.  Each user seen is logged once a session, so the journal tells a
        technician that a device is shared before a family member's readings become the patient's."""
        wanted: int | None = getattr(self.settings, "user_id", None)
        if user is not None and user not in self._users_seen:
            self._users_seen.add(user)
            hint = {"hint": "a shared device: set user_id to take one person's readings"} if wanted is None else {}
            self.log.info("ble_reading_user", user=user, user_id=wanted, taken=wanted in (None, user), **hint)
        if wanted is None or user is None or user == wanted:
            return list(readings)
        return []

    def _stamp(self, ts: DeviceDateTime | None, n: Notification, clock_not_set: bool = False) -> dict[str, Any]:
        return self._place(ts.as_naive_unix() if ts is not None else None, n, clock_not_set)

    def _place(self, device_time: float | None, n: Notification, clock_not_set: bool = False) -> dict[str, Any]:
        p = self.device_clock.place(device_time, n.received_at, clock_not_set)
        return {"t": p.time, "clock": p.clock, "device_time": p.device_time}


@dataclass(frozen=True, slots=True)
class Profile:
    """What sets one standard profile apart."""

    subscribe: tuple[str, ...]  # at least one must exist on the device
    decode: Callable[[BleDriver, Notification], list[Reading]]
    device_clock: bool = True  # read Current Time first: the device stamps its readings


def _heart_rate(d: BleDriver, n: Notification) -> list[Reading]:
    m = heart_rate.decode(n.data)
    return list(heart_rate.to_vitals(m, d.ctx.device_id, n.received_at, d.ctx.clock.quality()))


def _pulse_oximeter(d: BleDriver, n: Notification) -> list[Reading]:
    dev = d.ctx.device_id
    if n.uuid == plx.CONTINUOUS:
        return list(plx.to_vitals(plx.decode_continuous(n.data), dev, n.received_at, d.ctx.clock.quality()))
    m = plx.decode_spot_check(n.data)
    return list(plx.to_vitals(m, dev, **d._stamp(m.timestamp, n, m.device_clock_not_set)))


def _blood_pressure(d: BleDriver, n: Notification) -> list[Reading]:
    m = blood_pressure.decode(n.data)
    return d._for_patient(m.user_id, blood_pressure.to_vitals(m, d.ctx.device_id, **d._stamp(m.timestamp, n)))


def _thermometer(d: BleDriver, n: Notification) -> list[Reading]:
    m = thermometer.decode(n.data)
    return list(thermometer.to_vitals(m, d.ctx.device_id, **d._stamp(m.timestamp, n)))


def _weight(d: BleDriver, n: Notification) -> list[Reading]:
    m = weight.decode(n.data)
    return d._for_patient(m.user_id, weight.to_vitals(m, d.ctx.device_id, **d._stamp(m.timestamp, n)))


PROFILES: dict[str, Profile] = {
    "ble-heart-rate": Profile((heart_rate.MEASUREMENT,), _heart_rate, device_clock=False),
    "ble-pulse-oximeter": Profile((plx.CONTINUOUS, plx.SPOT_CHECK), _pulse_oximeter),
    "ble-blood-pressure": Profile((blood_pressure.MEASUREMENT,), _blood_pressure),
    "ble-thermometer": Profile((thermometer.MEASUREMENT,), _thermometer),
    "ble-weight": Profile((weight.MEASUREMENT,), _weight),
}


class ProfileDriver(BleDriver):
    """A standard profile of ``PROFILES``, chosen by the settings' driver name."""

    def __init__(self, ctx: DeviceContext, settings: BleSettings) -> None:
        super().__init__(ctx, settings)
        self.profile = PROFILES[str(getattr(settings, "driver", ""))]
        self.SUBSCRIBE = self.profile.subscribe

    async def _prepare(self) -> None:
        if self.profile.device_clock:
            await self._calibrate_clock()
        await super()._prepare()

    def _decode(self, n: Notification) -> list[Reading]:
        return self.profile.decode(self, n)


__all__ = ["PROFILES", "BleDriver", "Profile", "ProfileDriver", "SequenceStore"]
