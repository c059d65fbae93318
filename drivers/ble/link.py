"""One BLE link: find a device, connect with bleak-retry-connector, turn notifications into a stream.

bleak calls our notification and disconnect callbacks on the event loop; they only put items on a
bounded queue, so a slow consumer can never stall D-Bus.  When the queue is full the *oldest*
notification is dropped and counted (the newest data is the most useful to a monitor).  A dropped
link ends the stream with ``DriverDisconnected``; nothing here retries — the supervisor does.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

import bleak_retry_connector
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from gateway.clock import Clock
from gateway.driver_api import DriverConnectFailed, DriverDisconnected


@dataclass(frozen=True, slots=True)
class Notification:
    uuid: str  # characteristic UUID, lower case, 128-bit form
    data: bytes
    received_at: float  # host time


NO_RSSI = -127  # what bleak reports when BlueZ has no RSSI for a device (nothing heard in this scan)


class AdapterScanner:
    """One discovery per adapter, shared by every device waiting for an advertisement on it.

    BlueZ allows one discovery per D-Bus client (bleak uses one connection per process): a second
    StartDiscovery is rejected as InProgress and the first StopDiscovery ends the scan for all.  So a
    cuff, a scale and a meter waiting in passive mode cannot each run their own scanner; they register
    here, the scan runs while anyone waits and stops when the last waiter leaves.
    """

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter
        self._waiters: dict[str, list[asyncio.Future[BLEDevice]]] = {}
        self._scanner: BleakScanner | None = None
        self._lock = asyncio.Lock()
        self._last_rssi: dict[str, int] = {}

    @property
    def scanning(self) -> bool:
        return self._scanner is not None

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        # bleak reports *every* change of a device's properties while scanning, including the
        # Connected=False of a device that just left: that is no sign it is back.  An advertisement
        # received now shows as a fresh RSSI; a missing or unchanged RSSI is some other change.
        address = device.address.upper()
        if adv.rssi == NO_RSSI or self._last_rssi.get(address) == adv.rssi:
            return
        self._last_rssi[address] = adv.rssi
        for fut in self._waiters.pop(address, []):
            if not fut.done():
                fut.set_result(device)

    async def wait_for(self, address: str, timeout_s: float) -> BLEDevice | None:
        fut: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(address.upper(), [])
        waiters.append(fut)
        try:
            await self._start()
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            return None
        finally:
            if fut in self._waiters.get(address.upper(), []):
                self._waiters[address.upper()].remove(fut)
                if not self._waiters[address.upper()]:
                    del self._waiters[address.upper()]
            fut.cancel()
            if not self._waiters:
                await asyncio.shield(self._stop())

    async def _start(self) -> None:
        async with self._lock:
            if self._scanner is not None:
                return
            scanner = BleakScanner(self._on_advertisement, bluez={"adapter": self.adapter})
            try:
                await scanner.start()
            except (BleakError, OSError, EOFError) as e:
                # The same hint as `scan`; `doctor` checks BlueZ and the adapter one by one.
                raise DriverConnectFailed(
                    f"scanning on {self.adapter} failed: {e} (is BlueZ running, is {self.adapter} there and powered? "
                    "`iomt-gateway doctor` checks both)",
                    reason="scan_failed",
                ) from e
            self._scanner = scanner

    async def _stop(self) -> None:
        async with self._lock:
            if self._waiters or self._scanner is None:
                return
            scanner, self._scanner = self._scanner, None
            with contextlib.suppress(BleakError, OSError, EOFError, TimeoutError):
                await scanner.stop()


# One scanner per adapter and event loop (tests run several loops in one process).
_scanners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AdapterScanner]] = weakref.WeakKeyDictionary()


def adapter_scanner(adapter: str) -> AdapterScanner:
    per_loop = _scanners.setdefault(asyncio.get_running_loop(), {})
    if adapter not in per_loop:
        per_loop[adapter] = AdapterScanner(adapter)
    return per_loop[adapter]


class _TimedClient(BleakClient):
    """A BleakClient that connects within its own timeout.

    bleak-retry-connector passes ``timeout=BLEAK_TIMEOUT``, a module global it reads after an
    await: set per connection, two devices connecting at once would race for it.
    """

    def __init__(self, *args: Any, connect_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connect_timeout_s = connect_timeout_s

    async def connect(self, **kwargs: Any) -> None:
        kwargs["timeout"] = self._connect_timeout_s
        await super().connect(**kwargs)


class _Lost:
    """Queue sentinel: the link dropped."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class BleLink:
    def __init__(
        self,
        address: str,
        adapter: str,
        clock: Clock,
        *,
        connect_timeout_s: float = 20.0,
        queue_size: int = 1024,
        name: str = "",
        log: Any = None,
    ) -> None:
        self.address = address.upper()
        self.adapter = adapter
        self.clock = clock
        self.connect_timeout_s = connect_timeout_s
        self.name = name or "ble-device"  # never the address: this goes into messages and logs
        self.dropped = 0
        self._log = log
        self._queue: asyncio.Queue[Notification | _Lost] = asyncio.Queue(maxsize=queue_size)
        self._client: BleakClient | None = None
        self._closing = False

    # --- discovery -----------------------------------------------------------------------------

    async def find(self, timeout_s: float) -> BLEDevice | None:
        """The device once it advertises, or None after ``timeout_s``."""
        return await adapter_scanner(self.adapter).wait_for(self.address, timeout_s)

    # --- connection ----------------------------------------------------------------------------

    async def connect(self, device: BLEDevice) -> None:
        """One connection attempt.  Leaves nothing half-built when it fails."""
        self._closing = False
        self._reset_queue()
        try:
            self._client = await bleak_retry_connector.establish_connection(
                _TimedClient,
                device,
                self.name,
                disconnected_callback=self._on_disconnect,
                max_attempts=1,  # retries and backoff belong to the supervisor
                bluez={"adapter": self.adapter},
                connect_timeout_s=self.connect_timeout_s,  # passed on to _TimedClient
            )
        except (BleakError, TimeoutError, OSError, EOFError) as e:
            await self.close()
            raise DriverConnectFailed(f"cannot connect to {self.name}: {e}") from e

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    def has_characteristic(self, uuid: str) -> bool:
        return self._client is not None and self._client.services.get_characteristic(uuid) is not None

    def _require(self) -> BleakClient:
        if self._client is None or not self._client.is_connected:
            raise DriverDisconnected(f"{self.name}: not connected")
        return self._client

    async def subscribe(self, uuid: str) -> None:
        client = self._require()

        def callback(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            self._put(Notification(uuid, bytes(data), self.clock.now()))

        try:
            await client.start_notify(uuid, callback)
        except (BleakError, OSError, EOFError) as e:
            raise self._lost_or(e, f"subscribe to {uuid}") from e

    async def read(self, uuid: str) -> bytes:
        client = self._require()
        try:
            return bytes(await client.read_gatt_char(uuid))
        except (BleakError, OSError, EOFError) as e:
            raise self._lost_or(e, f"read {uuid}") from e

    async def write(self, uuid: str, data: bytes, response: bool = True) -> None:
        client = self._require()
        try:
            await client.write_gatt_char(uuid, data, response=response)
        except (BleakError, OSError, EOFError) as e:
            raise self._lost_or(e, f"write {uuid}") from e

    def _lost_or(self, e: Exception, what: str) -> DriverDisconnected | DriverConnectFailed:
        if not self.connected:
            return DriverDisconnected(f"{self.name}: link lost during {what}: {e}", reason="link_lost")
        # The link is up but the device refused: a session set-up failure, retried by the supervisor.
        return DriverConnectFailed(f"{self.name}: {what} failed: {e}", reason="refused")

    async def disconnect(self) -> None:
        """Let the device go (passive mode): the resulting callback is not a loss."""
        self._closing = True
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(BleakError, TimeoutError, OSError, EOFError):
                await client.disconnect()

    async def close(self) -> None:
        await self.disconnect()

    # --- the stream ----------------------------------------------------------------------------

    def _reset_queue(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def _put(self, item: Notification | _Lost) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            # Logged at 1, 2, 4, 8… drops: visible without flooding the journal.
            if self._log is not None and self.dropped & (self.dropped - 1) == 0:
                self._log.warning("ble_queue_overflow", dropped=self.dropped, queue_size=self._queue.maxsize)
        self._queue.put_nowait(item)

    def _on_disconnect(self, _client: BleakClient) -> None:
        if not self._closing:
            self._put(_Lost("device disconnected"))

    async def next(self, timeout_s: float | None = None) -> Notification | None:
        """The next notification; None after ``timeout_s`` of silence; raises when the link drops."""
        try:
            async with asyncio.timeout(timeout_s):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if isinstance(item, _Lost):
            # The client is kept: only its disconnect() releases its D-Bus connection (bleak does not
            # on a device-side drop), and close() must do that or every lost link leaks a socket.
            raise DriverDisconnected(f"{self.name}: {item.reason}", reason="link_lost")
        return item
