"""Doctor checks for BLE devices: BlueZ answers on the system bus and each adapter in use is powered.

Read-only D-Bus calls (``NameHasOwner``, ``GetManagedObjects``): no scan is started, no device touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from drivers.ble.settings import BleSettings
from gateway.checks import Check
from gateway.driver_api import DriverSettings

TIMEOUT_S = 5.0
_INSTALL = "sudo apt-get install bluez && sudo systemctl enable --now bluetooth"


async def _call(bus: MessageBus, **kw: Any) -> Any:
    async with asyncio.timeout(TIMEOUT_S):
        reply = await bus.call(Message(**kw))
    if reply is None or reply.message_type == MessageType.ERROR:
        raise OSError(f"D-Bus error: {reply.error_name if reply else 'no reply'} {reply.body if reply else ''}")
    return reply.body


async def _adapters() -> dict[str, bool] | None:
    """Adapter name -> powered; None when BlueZ is not on the bus."""
    async with asyncio.timeout(TIMEOUT_S):
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        (owned,) = await _call(
            bus,
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="NameHasOwner",
            signature="s",
            body=["org.bluez"],
        )
        if not owned:
            return None
        (objects,) = await _call(
            bus,
            destination="org.bluez",
            path="/",
            interface="org.freedesktop.DBus.ObjectManager",
            member="GetManagedObjects",
        )
    finally:
        bus.disconnect()
    out = {}
    for path, interfaces in objects.items():
        props = interfaces.get("org.bluez.Adapter1")
        if props is not None:
            powered = props.get("Powered")
            out[path.rsplit("/", 1)[-1]] = bool(powered.value) if powered is not None else False
    return out


def check(devices: Sequence[DriverSettings]) -> list[Check]:
    ble = [d for d in devices if isinstance(d, BleSettings)]
    if not ble:
        return []
    try:
        adapters = asyncio.run(_adapters())
    except (OSError, EOFError, TimeoutError, ValueError) as e:
        return [Check(False, "BlueZ", f"the system D-Bus cannot be reached ({e or type(e).__name__})", _INSTALL)]
    if adapters is None:
        return [Check(False, "BlueZ", "not running (no org.bluez on the system bus)", _INSTALL)]
    out = [Check(True, "BlueZ", f"running, adapters: {', '.join(sorted(adapters)) or 'none'}")]
    for name in sorted({d.adapter for d in ble}):
        users = ", ".join(d.id for d in ble if d.adapter == name)
        title = f"Bluetooth adapter {name} (for {users})"
        if name not in adapters:
            out.append(
                Check(False, title, "not present", "plug in the Bluetooth adapter, or set adapter: to one listed above")
            )
        elif not adapters[name]:
            out.append(
                Check(
                    False, title, "powered off", f"sudo rfkill unblock bluetooth && sudo bluetoothctl power on ({name})"
                )
            )
        else:
            out.append(Check(True, title, "powered"))
    return out
