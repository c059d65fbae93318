"""The doctor's BLE check against a mocked BlueZ (bluezoo on a private bus), and without BlueZ."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dbus_fast import BusType, Message, Variant
from dbus_fast.aio import MessageBus

from drivers.ble.checks import check
from drivers.ble.settings import BloodPressureSettings, HeartRateSettings
from drivers.serial.settings import Nonin2Settings
from tests.ble.harness import CENTRAL, MockBluez


async def test_bluez_and_the_adapter_in_use(mock_bluez: MockBluez) -> None:
    devices = [
        BloodPressureSettings(id="cuff", address="A0:9E:1A:00:11:22"),
        HeartRateSettings(id="strap", address="A0:9E:1A:00:11:23", adapter="hci7"),
        Nonin2Settings(id="ox", port="/dev/ttyUSB0"),  # not a BLE device: ignored here
    ]
    got = await asyncio.to_thread(check, devices)
    assert [(c.ok, c.title) for c in got] == [
        (True, "BlueZ"),
        (True, "Bluetooth adapter hci0 (for cuff)"),
        (False, "Bluetooth adapter hci7 (for strap)"),
    ]
    assert got[0].detail.startswith("running, adapters: hci0, hci1")
    assert got[1].detail == "powered"
    assert got[2].detail == "not present"
    assert CENTRAL  # hci0 is the mock's central adapter


async def test_a_powered_off_adapter_is_named_with_the_fix(mock_bluez: MockBluez) -> None:
    bus = await MessageBus(bus_address=mock_bluez.address, bus_type=BusType.SYSTEM).connect()
    try:
        await bus.call(
            Message(
                destination="org.bluez",
                path="/org/bluez/hci0",
                interface="org.freedesktop.DBus.Properties",
                member="Set",
                signature="ssv",
                body=["org.bluez.Adapter1", "Powered", Variant("b", False)],
            )
        )
    finally:
        bus.disconnect()
    got = await asyncio.to_thread(check, [BloodPressureSettings(id="cuff", address="A0:9E:1A:00:11:22")])
    assert [(c.ok, c.title, c.detail) for c in got[1:]] == [(False, "Bluetooth adapter hci0 (for cuff)", "powered off")]
    assert got[1].fix == "sudo rfkill unblock bluetooth && sudo bluetoothctl power on (hci0)"


def test_no_ble_devices_no_ble_checks() -> None:
    assert check([Nonin2Settings(id="ox", port="/dev/ttyUSB0")]) == []


def test_without_bluez_the_fix_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    (c,) = check([BloodPressureSettings(id="cuff", address="A0:9E:1A:00:11:22")])
    assert not c.ok and c.title == "BlueZ"
    assert c.detail.startswith("the system D-Bus cannot be reached")
    assert c.fix == "sudo apt-get install bluez && sudo systemctl enable --now bluetooth"
