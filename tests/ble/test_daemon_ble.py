"""The real daemon (a child process) configured from YAML with BLE devices, bluezoo as BlueZ, a real
Mosquitto as the upstream: records, status and the glucose hand-over survive a vanishing strap and a
daemon restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.ble import glucose, heart_rate
from gateway.device_tags import DeviceTagger
from tests.ble.devices import GlucoseMeter, heart_rate_strap
from tests.ble.harness import MockBluez
from tests.ble.test_e2e import utc_wall_clock
from tests.broker import MosquittoBroker, Subscriber
from tests.daemon_harness import DaemonProcess, write_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    made: list[DaemonProcess] = []
    yield made
    for d in made:
        d.close()


def _bodies(sub: Subscriber, kind: str) -> list[dict[str, Any]]:
    return [r.json() for r in sub.records() if f"/{kind}/" in r.topic]


def _states(sub: Subscriber, device: str) -> list[str]:
    return [b["state"] for b in _bodies(sub, "status") if b["device"] == device]


def _glucose_summaries(sub: Subscriber) -> list[dict[str, Any]]:
    return [b for b in _bodies(sub, "summary") if b["vital"] == "glucose"]


async def _strap_pulse(strap: Any, stop: asyncio.Event) -> None:
    bpm = 60
    while not stop.is_set():
        with contextlib.suppress(Exception):  # the strap may be switched off between two beats
            if strap.bus is not None and strap.is_notifying(heart_rate.MEASUREMENT):
                strap.notify(heart_rate.MEASUREMENT, bytes([0, bpm]))
        bpm = 60 + (bpm - 59) % 20
        await asyncio.sleep(0.1)


async def test_daemon_with_ble_devices(
    mock_bluez: MockBluez, broker: MosquittoBroker, subscriber: Subscriber, tmp_path: Path, daemons: list[Any]
) -> None:
    hr_addr, g_addr = mock_bluez.peripherals[0], mock_bluez.peripherals[2]
    now = utc_wall_clock()
    strap = heart_rate_strap(mock_bluez.adapter_of(hr_addr))
    meter = GlucoseMeter(mock_bluez.adapter_of(g_addr), now)
    meter.add(1, now - timedelta(hours=3), 95)
    meter.add(2, now - timedelta(hours=2), 110)
    cfg = write_config(
        tmp_path,
        broker_url=broker.url,
        patients={
            "p-ble": [
                {
                    "id": "hr-1",
                    "driver": "ble-heart-rate",
                    "address": hr_addr,
                    "scan_timeout_s": 3,
                    "connect_timeout_s": 3,
                    "idle_timeout_s": 2,
                },
                {"id": "bg-1", "driver": "ble-glucose", "address": g_addr, "connect_timeout_s": 3},
            ]
        },
        extra={"processing": {"summaries": {"period_s": 2}}},
    )
    stop_pulse = asyncio.Event()
    pulse = asyncio.ensure_future(_strap_pulse(strap, stop_pulse))
    try:
        await strap.start()
        await meter.peripheral.start()
        d = DaemonProcess(cfg, tmp_path)
        daemons.append(d)
        await asyncio.to_thread(d.start)

        # The strap streams; the meter hands over its two stored records and is let go.
        await subscriber.wait_until(
            lambda _: any(
                b["vital"] == "heart_rate" and b["count"] > 0 and "hr-1" in b["devices"]
                for b in _bodies(subscriber, "summary")
            ),
            within_s=30,
        )
        await subscriber.wait_until(lambda _: sum(b["count"] for b in _glucose_summaries(subscriber)) >= 2, 30)
        # The visit is reported (after the supervisor's own "connected" for the waiting session).
        await subscriber.wait_until(lambda _: _states(subscriber, "bg-1")[-2:] == ["connected", "disconnected"], 10)

        # The strap vanishes mid-stream and comes back: disconnected, then a new session connects.
        await strap.stop()
        await subscriber.wait_until(lambda _: "disconnected" in _states(subscriber, "hr-1"), within_s=20)
        await strap.start()
        await subscriber.wait_until(lambda _: _states(subscriber, "hr-1").count("connected") >= 2, within_s=30)

        # Daemon restart; meanwhile the meter took one more reading, and comes back with it.
        assert await asyncio.to_thread(d.stop, 10) == 0
        await meter.peripheral.stop()
        meter.add(3, now - timedelta(hours=1), 130)
        d2 = DaemonProcess(cfg, tmp_path)
        daemons.append(d2)
        await asyncio.to_thread(d2.start)
        await meter.peripheral.start()
        await subscriber.wait_until(lambda _: sum(b["count"] for b in _glucose_summaries(subscriber)) >= 3, 30)
        await asyncio.sleep(2.0)  # a repeat would show up within a second or two: it must not
        assert await asyncio.to_thread(d2.stop, 10) == 0
    finally:
        stop_pulse.set()
        await pulse
        await strap.stop()
        await meter.peripheral.stop()

    g = _glucose_summaries(subscriber)
    assert sum(b["count"] for b in g) == 3, g  # no gaps, no repeats across the restart
    assert sorted(b["mean"] for b in g) == [95.0, 110.0, 130.0]
    assert meter.requests == [glucose.racp_all_records(), glucose.racp_records_from(3)]
    state = json.loads((tmp_path / "state" / "devices" / "bg-1" / "ble-glucose.json").read_text())
    assert state["last_sequence"] == 3

    # No device address left the drivers: not upstream, not in the journal (both daemons' lines),
    # whatever the spelling; the journal names the devices by their keyed tags instead, and the
    # status records carry reason codes.
    upstream = "".join(r.payload.decode() for r in subscriber.received)
    journal = d.log_path.read_text()
    for addr in (hr_addr, g_addr):
        for spelled in (addr, addr.lower(), addr.replace(":", "_"), addr.replace(":", "_").lower()):
            assert spelled not in upstream and spelled not in journal, spelled
    tagger = DeviceTagger.load(tmp_path / "state", create=False)
    assert tagger.tag(g_addr) in journal
    details = {b["detail"] for b in _bodies(subscriber, "status") if b["state"] in ("connected", "disconnected")}
    assert details and details <= {"", "advertised", "released", "link_lost", "no_data", "disconnected"}, details
