"""BLE glucose meter: records fetched through the Record Access Control Point (RACP)."""

from __future__ import annotations

import asyncio

from drivers.ble import glucose
from drivers.ble.driver import BleDriver
from drivers.ble.link import Notification
from drivers.ble.sequence_store import Held, SequenceStore
from drivers.ble.settings import GlucoseSettings
from gateway.driver_api import DeviceContext, DriverConfigError
from gateway.readings import Reading


class GlucoseDriver(BleDriver):
    """Fetches the records the gateway does not hold yet through the RACP, then listens (connected
    mode) or lets the meter go (passive mode).  The sequence number is saved only after the consumer
    took the reading, so a crash repeats at most the reading in flight, and never skips one.

    When the meter has nothing newer than the last number held, the driver asks for its newest
    record: a number *below* the one held means the meter's numbering started again (factory reset,
    replaced meter with the same address), and everything it stores is fetched once more.

    A meter sends its records as fast as the link carries them, and a notification lost to a full
    queue (``BleLink``: the oldest is dropped) leaves a gap in the numbering.  So the place moves on
    only through contiguous numbers; a record past a gap is held apart (``Held.above``), and the
    next fetch starts at the gap, skipping those.  A gap that comes with no notification lost is
    the meter's own (it overwrote its oldest records), and at the end of such a fetch the place
    moves past it."""

    settings: GlucoseSettings
    SUBSCRIBE = (glucose.MEASUREMENT, glucose.RACP)
    STATE_FILE = "ble-glucose.json"

    def __init__(self, ctx: DeviceContext, settings: GlucoseSettings) -> None:
        super().__init__(ctx, settings)
        self.store = SequenceStore(ctx.state_dir / self.STATE_FILE, settings.address)
        self.held = Held()
        self.racp_result: glucose.RacpResult | None = None
        self._dropped_at_request = 0
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
        self.held = await asyncio.to_thread(self.store.load)
        await self._request(glucose.racp_records_after(self.held.last))

    async def _request(self, request: bytes) -> None:
        self.racp_result = None
        self._dropped_at_request = self.link.dropped
        self.log.info(
            "ble_glucose_fetch", last_held=self.held.last, held_past_gap=len(self.held.above), request=request.hex()
        )
        await self.link.write(glucose.RACP, request)

    def _lost(self) -> int:
        """Notifications the link dropped since the last request."""
        return self.link.dropped - self._dropped_at_request

    def _hold(self, seq: int) -> None:
        """Record ``seq`` is held: the place moves on through the contiguous numbers, and past a
        gap no lost notification explains (the meter's own); past one that may be a lost record,
        ``seq`` is held apart.  So the state file stays a number unless a notification was lost,
        rather than a list growing with every record of a first download."""
        held = self.held
        if (held.last is not None and seq == held.last + 1) or (not held.above and not self._lost()):
            held.last = seq
            while held.last + 1 in held.above:
                held.above.discard(held.last + 1)
                held.last += 1
        else:
            held.above.add(seq)

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
        if (self.held.last is not None and m.sequence <= self.held.last) or m.sequence in self.held.above:
            if not self._probing:
                self.log.info("ble_glucose_repeat_skipped", sequence=m.sequence, last_held=self.held.last)
            return []
        self._pending_seq = m.sequence
        time_fault = m.status is not None and bool(m.status & (1 << 11))
        # The meter's user-facing time (base time + offset) is the device's own time of the reading.
        return list(glucose.to_vitals(m, self.ctx.device_id, **self._place(m.device_time, n, time_fault)))

    async def _delivered(self, n: Notification) -> bool:
        if self._pending_seq is not None:
            seq, self._pending_seq = self._pending_seq, None
            await self.ctx.checkpoint()  # the reading is on disk before the meter's place is moved on
            self._hold(seq)
            await asyncio.to_thread(self.store.save, self.held)
            return False
        if n.uuid != glucose.RACP or self.racp_result is None:
            return False
        result = self.racp_result
        if self._probing:
            self._probing = False
            newest, self._newest_on_meter = self._newest_on_meter, None
            if newest is not None and self.held.last is not None and newest < self.held.last:
                self.log.warning("ble_glucose_numbering_restarted", newest_on_meter=newest, last_held=self.held.last)
                self.held = Held()
                await self._request(glucose.racp_all_records())
                return False
        elif result is glucose.RacpResult.NO_RECORDS_FOUND and self.held.last is not None and not self.held.above:
            self._probing = True
            self._newest_on_meter = None
            await self._request(glucose.racp_last_record())
            return False
        ok = result in (glucose.RacpResult.SUCCESS, glucose.RacpResult.NO_RECORDS_FOUND)
        lost = self._lost()
        if ok and self.held.above and not lost:
            # The meter sent all it has from the place on, and none was lost: the gaps left are
            # records it no longer stores.
            self.held = Held(max(self.held.above | {self.held.last or 0}))
            await asyncio.to_thread(self.store.save, self.held)
        level = self.log.info if ok and not lost else self.log.warning
        level(
            "ble_glucose_fetch_done",
            result=result.name.lower(),
            last_held=self.held.last,
            held_past_gap=len(self.held.above),
            notifications_lost=lost,
        )
        return self.passive
