"""CPU cost of BLE notifications: per 1,000 payloads decoded, and through the driver.

Usage: uv run python bench/ble_decode_cpu.py [--n 20000]

Three figures, CPU time of this process (``time.process_time``):
  1. pure decode + conversion to readings, per profile (the reference vectors, repeated);
  2. the driver path without radio: notifications put on the link's queue as bleak's callback does,
     then ``driver.readings()`` decodes and yields them (queue + decode + records);
  3. the full path through real bleak and the mocked BlueZ: an emulated strap in this process
     notifies over D-Bus (bluezoo relays in its own process, not counted).  This includes the
     emulated device's own cost of sending, so it is an upper bound for the gateway's share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.ble import blood_pressure, glucose, heart_rate, plx, polar_pmd, thermometer, weight  # noqa: E402
from drivers.ble.driver import ProfileDriver  # noqa: E402
from drivers.ble.link import Notification  # noqa: E402
from drivers.ble.settings import HeartRateSettings  # noqa: E402
from gateway.clock import SyncPolicy, SystemClock  # noqa: E402
from gateway.driver_api import DeviceContext  # noqa: E402
from gateway.records import ClockQuality  # noqa: E402
from tests.ble.devices import heart_rate_strap  # noqa: E402
from tests.ble.harness import running_mock_bluez  # noqa: E402

Q = ClockQuality.SYNCED
ECG_FRAME = b"\x00" + (10**18).to_bytes(8, "little") + b"\x00" + bytes(range(219))  # 73 samples

CASES: dict[str, tuple[bytes, Callable[[bytes], object]]] = {
    "heart rate (HR + 2 RR)": (
        bytes.fromhex("1655E803DE03"),
        lambda b: heart_rate.to_vitals(heart_rate.decode(b), "d", 0.0, Q),
    ),
    "PLX continuous (full)": (
        bytes.fromhex("1FDEF3CAF3CAF35AF5D4F3B2F220010000007AE3"),
        lambda b: plx.to_vitals(plx.decode_continuous(b), "d", 0.0, Q),
    ),
    "blood pressure": (
        bytes.fromhex("1E8A00580078000000041114293B3C00012700"),
        lambda b: blood_pressure.to_vitals(blood_pressure.decode(b), "d", 0.0, Q),
    ),
    "thermometer": (
        bytes.fromhex("06B00E00FEDC070C050B321B04"),
        lambda b: thermometer.to_vitals(thermometer.decode(b), "d", 0.0, Q),
    ),
    "weight (imperial, BMI)": (
        bytes.fromhex("0F543DE7070C190E1E2D03F500A802"),
        lambda b: weight.to_vitals(weight.decode(b), "d", 0.0, Q),
    ),
    "glucose": (
        bytes.fromhex("1B0100E307021B0B0A1EFBFF1E00120501"),
        lambda b: glucose.to_vitals(glucose.decode(b), "d", 0.0, Q),
    ),
    "Polar ECG frame (73 samples)": (ECG_FRAME, polar_pmd.decode_ecg),
}


def pure(n: int) -> None:
    print(f"1. decode + readings, CPU ms per 1,000 notifications (n={n})")
    for name, (payload, fn) in CASES.items():
        t = time.process_time()
        for _ in range(n):
            fn(payload)
        print(f"   {name:<30} {(time.process_time() - t) * 1e6 / n:8.2f}")
    tl = polar_pmd.EcgTimeline("d")
    frame = polar_pmd.decode_ecg(ECG_FRAME)
    t = time.process_time()
    for _ in range(n):
        tl.block(frame, 0.0, Q)
    print(f"   {'Polar ECG frame -> SampleBlock':<30} {(time.process_time() - t) * 1e6 / n:8.2f}")


def context(tmp: str) -> DeviceContext:
    return DeviceContext("hr", "p", SystemClock(SyncPolicy.ASSUME_SYNCED), Path(tmp) / "state")


async def driver_path(n: int, tmp: str) -> None:
    settings = HeartRateSettings(id="hr", address="AA:BB:CC:DD:EE:01", queue_size=65536)
    driver = ProfileDriver(context(tmp), settings)
    payload = bytes.fromhex("1655E803DE03")
    it = aiter(driver._visit())
    driver.link._client = None
    t = time.process_time()
    for _ in range(n):
        driver.link._put(Notification(heart_rate.MEASUREMENT, payload, 0.0))
        for _ in range(3):  # HR + 2 RR
            await anext(it)
    print(f"2. driver path (queue -> decode -> readings), HR: {(time.process_time() - t) * 1e6 / n:.2f} CPU ms/1,000")


async def dbus_path(n: int, tmp: str) -> None:
    async with running_mock_bluez(Path(tmp)) as mock:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = mock.address
        address = mock.peripherals[0]
        strap = heart_rate_strap(mock.adapter_of(address))
        await strap.start()
        settings = HeartRateSettings(id="hr", address=address, scan_timeout_s=10, queue_size=65536)
        driver = ProfileDriver(context(tmp), settings)
        payload = bytes.fromhex("1655E803DE03")
        async with driver:
            it = aiter(driver.readings())
            await anext(it)  # battery
            await strap.wait_subscribed(heart_rate.MEASUREMENT)
            t, wall = time.process_time(), time.perf_counter()
            # Bursts of 10, then wait for them to come out of the driver: a flood would only measure
            # how dbus-daemon throttles a client whose socket buffer is full.
            for _ in range(n // 10):
                for _ in range(10):
                    strap.notify(heart_rate.MEASUREMENT, payload)
                for _ in range(30):
                    await anext(it)
            cpu, wall = time.process_time() - t, time.perf_counter() - wall
        await strap.stop()
    print(
        f"3. full path via bleak + mocked BlueZ, HR: {cpu * 1e6 / n:.1f} CPU ms/1,000 "
        f"(incl. the emulated strap's sending; {n / wall:.0f} notifications/s), dropped {driver.link.dropped}"
    )


async def main(n: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    pure(n)
    with tempfile.TemporaryDirectory() as tmp:
        await driver_path(n, tmp)
        await dbus_path(min(n, 5000), tmp)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    asyncio.run(main(parser.parse_args().n))
