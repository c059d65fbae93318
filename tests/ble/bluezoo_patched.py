"""bluezoo 1.0.2 with the six defects of ../shared/reference/ble-testing.md worked around, as a program.

Run as ``python -m tests.ble.bluezoo_patched -a 00:11:22:33:44:55 -a AA:BB:CC:DD:EE:01`` with
``DBUS_SYSTEM_BUS_ADDRESS`` pointing at a private bus.  Each patch says which defect it fixes;
everything else is bluezoo unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import sys
from typing import Any

import sdbus
from bluezoo import bluezoo as bz
from bluezoo import events
from bluezoo.adapter import Adapter
from bluezoo.device import Device
from bluezoo.exceptions import DBusBluezFailedError, DBusBluezInProgressError
from bluezoo.gatt import GattCharacteristicClientLink
from bluezoo.gatt.manager import GattManager
from bluezoo.interfaces.Device import DeviceInterface
from bluezoo.interfaces.LEAdvertisement import LEAdvertisementInterface

log = logging.getLogger("bluezoo-patched")

# Defect 5: how long a connect to a silent device takes to fail (BlueZ >= 5.62 gives up on its own).
ABSENT_CONNECT_FAIL_S = 0.3


def _prop(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    raise AttributeError(name)


# --- Defect 1: ManufacturerData is a{qv} in BlueZ, not a{sv} ------------------------------------
for _cls in (Device, DeviceInterface, LEAdvertisementInterface):
    for _name in ("ManufacturerData", "ScanResponseManufacturerData"):
        try:
            _p = _prop(_cls, _name)
        except AttributeError:
            continue
        if getattr(_p, "property_signature", None) == "a{sv}":
            _p.property_signature = "a{qv}"


# --- Defect 2: re-announce devices on every scan tick with a changing RSSI ----------------------
_rssi = itertools.cycle(range(-60, -40))
_rssi_prop = _prop(Device, "RSSI")
if _rssi_prop.property_setter is None:
    _rssi_prop.setter_private(lambda self, value: setattr(self, "rssi", value))

_orig_add_device = Adapter.add_device


async def _add_device(self: Adapter, device: Device) -> None:
    device.rssi = next(_rssi)
    await _orig_add_device(self, device)
    # A known device is only "synced" by bluezoo, which emits nothing when no property changed:
    # a fresh RSSI makes it a PropertiesChanged that bleak's scanner reports, as BlueZ does per advert.
    existing = self.devices[device.get_object_path()]
    if existing is not device:
        await existing.RSSI.set_async(next(_rssi))


Adapter.add_device = _add_device  # type: ignore[method-assign]


# --- Defects 3 and 4b: disconnect removes the GATT link objects and stops notifying -------------
_orig_disconnect = Device.disconnect


async def _unlink(device: Device) -> None:
    mock = device.peer_adapter.mock
    for link in list(device.services.values()):
        if isinstance(link, GattCharacteristicClientLink):
            try:
                if link.client.Notifying.get(False):
                    await link.client.StopNotify()
            except Exception as e:
                log.debug("StopNotify on %s failed: %r", link, e)
            link.client_props_changed_subscription.unsubscribe()
        with contextlib.suppress(KeyError):
            mock.remove_object(link)
    device.services.clear()
    if device.services_resolved:
        await device.ServicesResolved.set_async(False)
    if device.peer is not None and device.peer.services_resolved:
        await device.peer.ServicesResolved.set_async(False)


async def _disconnect(self: Device, uuid: str | None = None) -> None:
    await _orig_disconnect(self, uuid)
    await _unlink(self)


Device.disconnect = _disconnect  # type: ignore[method-assign]


# --- Defect 4a: a peripheral whose process goes away drops every link to it ---------------------
_orig_del_app = GattManager._GattManager__del_gatt_application  # type: ignore[attr-defined]


async def _del_gatt_application(self: Adapter, app: Any) -> None:
    await _orig_del_app(self, app)
    for adapter in list(self.mock.adapters.values()):
        for device in list(adapter.devices.values()):
            if device.peer_adapter is self and device.connected:
                await device.disconnect()


GattManager._GattManager__del_gatt_application = _del_gatt_application  # type: ignore[attr-defined]


# --- Defect 5: connecting to a device that does not advertise fails -----------------------------
_orig_connect = Device.connect


async def _connect(self: Device, uuid: str | None = None) -> None:
    if self.is_le and not self.peer_adapter.advertisements:
        await asyncio.sleep(ABSENT_CONNECT_FAIL_S)
        raise DBusBluezFailedError("le-connection-abort-by-local")
    if self.connected:
        return
    await _orig_connect(self, uuid)


Device.connect = _connect  # type: ignore[method-assign]


# --- Fidelity: discovery is per D-Bus client, as in BlueZ -----------------------------------------
# BlueZ answers a second StartDiscovery from the same client with org.bluez.Error.InProgress and keeps
# scanning until the *last* client stops; bluezoo restarts its scan task for every caller (orphaning
# the previous one) and stops scanning for everybody on the first StopDiscovery.  The gateway's
# drivers must cope with the real behaviour, so the mock has it.
_start_discovery = Adapter.__dict__["StartDiscovery"]
_stop_discovery = Adapter.__dict__["StopDiscovery"]
_orig_start_discovery = _start_discovery.original_method
_orig_stop_discovery = _stop_discovery.original_method


async def _start_discovery_per_client(self: Adapter) -> None:
    sender = sdbus.get_current_message().sender
    if sender in self.scan_subscribers:
        raise DBusBluezInProgressError("Operation already in progress")
    if self.scan_subscribers and self.discovering:
        # Another client scans already: join its scan (and be cleaned up if this client vanishes).
        async def on_sender_lost() -> None:
            self.scan_subscribers.pop(sender, None)
            if not self.scan_subscribers:
                self.discovering_task.cancel()
                await self.Discovering.set_async(False)

        self.scan_subscribers[sender] = events.subscribe(f"service:lost:{sender}", on_sender_lost, once=True)
        return
    await _orig_start_discovery(self)


async def _stop_discovery_per_client(self: Adapter) -> None:
    sender = sdbus.get_current_message().sender
    subscriber = self.scan_subscribers.pop(sender, None)
    if subscriber is None:
        raise DBusBluezFailedError("No discovery started")
    subscriber.unsubscribe()
    if not self.scan_subscribers:
        self.discovering_task.cancel()
        await self.Discovering.set_async(False)


_start_discovery.original_method = _start_discovery_per_client
_stop_discovery.original_method = _stop_discovery_per_client


# --- Defect 6: only hci0 is a central; the others are peripherals -------------------------------
_roles = _prop(Adapter, "Roles")
_orig_roles_getter = _roles.property_getter


def _roles_getter(self: Adapter) -> list[str]:
    return ["central", "peripheral", "central-peripheral"] if self.id == 0 else ["peripheral"]


_roles.property_getter = _roles_getter


def main() -> None:
    """bluezoo's own command line, but with a fractional scan interval: real devices advertise every
    20 ms to a few seconds, and the tests should not wait bluezoo's whole seconds for each one."""
    parser = argparse.ArgumentParser(description="bluezoo with test-harness fixes")
    parser.add_argument("-a", "--adapter", dest="adapters", action="append", required=True)
    parser.add_argument("--scan-interval", type=float, default=0.2)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(bz.startup(adapters=args.adapters, auto_enable=True, scan_interval=args.scan_interval))
    loop.run_forever()


if __name__ == "__main__":
    sys.exit(main())
