"""An emulated BLE peripheral: a GATT application and an LE advertisement registered on a mock adapter.

It is what a Linux peripheral does with real BlueZ (``GattManager1.RegisterApplication``,
``LEAdvertisingManager1.RegisterAdvertisement``), spoken over dbus-fast to bluezoo.  Notifications and
indications are ``PropertiesChanged`` on a characteristic's ``Value``.  ``stop()`` closes the bus
connection: to the central, the device has been switched off.

No ``from __future__ import annotations`` here: dbus-fast reads D-Bus signatures from annotations.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method

WriteHandler = Callable[[bytes], Awaitable[None] | None]


@dataclass
class CharSpec:
    uuid: str
    flags: list[str]
    value: bytes = b""
    on_write: WriteHandler | None = None


@dataclass
class ServiceSpec:
    uuid: str
    characteristics: list[CharSpec] = field(default_factory=list)


class _Service(ServiceInterface):
    def __init__(self, uuid: str) -> None:
        super().__init__("org.bluez.GattService1")
        self._uuid = uuid

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":  # noqa: F821
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":  # noqa: F821
        return True


class _Characteristic(ServiceInterface):
    def __init__(self, spec: CharSpec, service_path: str, owner: "Peripheral") -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.spec = spec
        self._service_path = service_path
        self._owner = owner
        self.notifying = False

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":  # noqa: F821
        return self.spec.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":  # noqa: F821
        return self._service_path

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":  # noqa: F722
        return self.spec.flags

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> "ay":  # noqa: F821
        return self.spec.value

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> "b":  # noqa: F821
        return self.notifying

    @method()
    def ReadValue(self, options: "a{sv}") -> "ay":  # noqa: F821, F722
        return self.spec.value

    @method()
    async def WriteValue(self, value: "ay", options: "a{sv}") -> None:  # noqa: F821, F722
        self._owner.writes.append((self.spec.uuid, bytes(value)))
        if self.spec.on_write is not None:
            result = self.spec.on_write(bytes(value))
            if result is not None:
                await result

    @method()
    def StartNotify(self) -> None:
        self.notifying = True
        self.emit_properties_changed({"Notifying": True})
        self._owner._subscribed(self.spec.uuid)

    @method()
    def StopNotify(self) -> None:
        self.notifying = False
        self.emit_properties_changed({"Notifying": False})

    @method()
    def Confirm(self) -> None:
        # bluezoo calls this after forwarding each notification (see ble-testing.md).
        self._owner._confirmed()

    def push(self, value: bytes) -> None:
        self.spec.value = value
        self._owner._unconfirmed += 1
        self.emit_properties_changed({"Value": value})


class _Advertisement(ServiceInterface):
    def __init__(self, name: str, service_uuids: list[str]) -> None:
        super().__init__("org.bluez.LEAdvertisement1")
        self._name = name
        self._uuids = service_uuids

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":  # noqa: F821
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> "as":  # noqa: F722
        return self._uuids

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> "s":  # noqa: F821
        return self._name

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> "b":  # noqa: F821
        return True

    @method()
    def Release(self) -> None:
        pass


class _ObjectManager(ServiceInterface):
    def __init__(self, owner: "Peripheral") -> None:
        super().__init__("org.freedesktop.DBus.ObjectManager")
        self._owner = owner

    @method()
    def GetManagedObjects(self) -> "a{oa{sa{sv}}}":  # noqa: F722
        return self._owner._managed_objects()


class Peripheral:
    """One emulated device on mock adapter ``adapter`` (its address is the device's address)."""

    APP_PATH = "/com/example/iomt"

    def __init__(self, name: str, adapter: str, services: list[ServiceSpec], advertise: bool = True) -> None:
        self.name = name
        self.adapter_path = f"/org/bluez/{adapter}"
        self.services = services
        self.advertise = advertise
        self.writes: list[tuple[str, bytes]] = []
        self.bus: MessageBus | None = None
        self._chars: dict[str, _Characteristic] = {}
        self._objects: dict[str, list[ServiceInterface]] = {}
        self._subscriptions: dict[str, asyncio.Event] = {}
        # Notifications bluezoo has not confirmed yet: stop() waits for them, as a radio would finish
        # its pending packets, so no Confirm call lands on a closing connection.
        self._unconfirmed = 0
        self._all_confirmed = asyncio.Event()

    def _managed_objects(self) -> dict[str, dict[str, dict[str, Variant]]]:
        out: dict[str, dict[str, dict[str, Variant]]] = {}
        for path, ifaces in self._objects.items():
            out[path] = {}
            for iface in ifaces:
                props: dict[str, Variant] = {}
                for prop in ServiceInterface._get_properties(iface):
                    props[prop.name] = Variant(prop.signature, getattr(iface, prop.prop_getter.__name__))
                out[path][iface.name] = props
        return out

    def _confirmed(self) -> None:
        self._unconfirmed = max(0, self._unconfirmed - 1)
        if self._unconfirmed == 0:
            self._all_confirmed.set()

    def _subscribed(self, uuid: str) -> None:
        self._subscriptions.setdefault(uuid, asyncio.Event()).set()

    async def wait_subscribed(self, uuid: str, within_s: float = 10.0) -> None:
        event = self._subscriptions.setdefault(uuid, asyncio.Event())
        async with asyncio.timeout(within_s):
            await event.wait()

    def is_notifying(self, uuid: str) -> bool:
        return self._chars[uuid].notifying

    async def _call(self, path: str, interface: str, member: str, signature: str, body: list[object]) -> None:
        assert self.bus is not None
        reply = await self.bus.call(
            Message(
                destination="org.bluez",
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body,
            )
        )
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{member}: {reply.error_name} {reply.body}")

    async def start(self) -> None:
        self._subscriptions.clear()
        self._unconfirmed = 0
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self.bus = bus
        self._objects = {}
        self._chars = {}
        app = self.APP_PATH
        bus.export(app, _ObjectManager(self))
        for i, svc in enumerate(self.services):
            spath = f"{app}/service{i}"
            s = _Service(svc.uuid)
            bus.export(spath, s)
            self._objects[spath] = [s]
            for j, cspec in enumerate(svc.characteristics):
                cpath = f"{spath}/char{j}"
                c = _Characteristic(cspec, spath, self)
                bus.export(cpath, c)
                self._objects[cpath] = [c]
                self._chars[cspec.uuid] = c
        await self._call(self.adapter_path, "org.bluez.GattManager1", "RegisterApplication", "oa{sv}", [app, {}])
        if self.advertise:
            await self.start_advertising()

    async def start_advertising(self) -> None:
        assert self.bus is not None
        adv_path = f"{self.APP_PATH}/adv0"
        with contextlib.suppress(ValueError):
            self.bus.export(adv_path, _Advertisement(self.name, [s.uuid for s in self.services]))
        await self._call(
            self.adapter_path, "org.bluez.LEAdvertisingManager1", "RegisterAdvertisement", "oa{sv}", [adv_path, {}]
        )

    def notify(self, uuid: str, value: bytes) -> None:
        self._chars[uuid].push(value)

    async def stop(self) -> None:
        """Switch the device off: its bus connection goes, bluezoo drops its app, advert and links."""
        if self.bus is not None:
            if self._unconfirmed:
                self._all_confirmed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._all_confirmed.wait()
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await self.bus.wait_for_disconnect()
            self.bus = None
