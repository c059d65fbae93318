"""BLE reconnect time after a device returns, against the mocked BlueZ (bluezoo on a private D-Bus).

Usage: uv run python bench/ble_reconnect.py [--tries 20] [--scan-interval 0.2]

Each try: a heart-rate strap streams to a connected-mode driver; the strap is switched off (its
process leaves the bus) and the driver raises DriverDisconnected; the strap comes back; a new
driver session (what the supervisor starts) scans, connects with bleak-retry-connector, subscribes
and receives the first notification.  Timed from "the strap is advertising again" to
  * connected = ``async with driver`` entered (found + connected + services + subscribed),
  * first reading = the first heart rate out of ``driver.readings()``.
Two cases: the session is already scanning when the strap comes back (what the supervisor's retry
does), and the session starts once the strap is back.  The mock re-announces an advertising device
every --scan-interval seconds (a real strap advertises every 20 ms to 1 s): in the first case expect
about half of it plus the D-Bus round trips; in the second bluezoo announces at once when a scan starts.
No RF: a real link adds connection-interval and service-discovery latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.ble import heart_rate  # noqa: E402
from drivers.ble.driver import ProfileDriver  # noqa: E402
from drivers.ble.settings import HeartRateSettings  # noqa: E402
from gateway.clock import SyncPolicy, SystemClock  # noqa: E402
from gateway.driver_api import DeviceContext, DriverDisconnected  # noqa: E402
from tests.ble.devices import heart_rate_strap  # noqa: E402
from tests.ble.harness import running_mock_bluez  # noqa: E402


async def one_try(
    adapter: str, ctx: DeviceContext, settings: HeartRateSettings, returns_while_scanning: bool
) -> tuple[float, float]:
    strap = heart_rate_strap(adapter)
    driver = ProfileDriver(ctx, settings)
    if returns_while_scanning:
        # The supervisor's new session is already looking for the strap when it comes back in range.
        entering = asyncio.ensure_future(driver.__aenter__())
        await asyncio.sleep(random.uniform(0.2, 0.5))
        await strap.start()
        t0 = time.perf_counter()
        await entering
    else:
        await strap.start()
        t0 = time.perf_counter()
        await driver.__aenter__()
    try:
        t_connected = time.perf_counter() - t0
        it = aiter(driver.readings())
        await anext(it)  # battery
        await strap.wait_subscribed(heart_rate.MEASUREMENT)
        strap.notify(heart_rate.MEASUREMENT, bytes([0, 60]))
        await anext(it)
        t_first = time.perf_counter() - t0
        await strap.stop()  # the strap leaves: the session must end with DriverDisconnected
        try:
            async with asyncio.timeout(10):
                await anext(it)
            raise RuntimeError("driver did not notice the strap leaving")
        except DriverDisconnected:
            pass
    finally:
        await driver.__aexit__(None, None, None)
    return t_connected, t_first


def _line(label: str, xs: list[float]) -> str:
    ms = [x * 1000 for x in xs]
    return f"  {label:<44} median {statistics.median(ms):5.0f} ms  (min {min(ms):.0f}, max {max(ms):.0f})"


async def main(tries: int, scan_interval: float) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory() as tmp:
        async with running_mock_bluez(Path(tmp), scan_interval) as mock:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = mock.address
            address = mock.peripherals[0]
            ctx = DeviceContext("hr", "p", SystemClock(SyncPolicy.ASSUME_SYNCED), Path(tmp) / "state")
            settings = HeartRateSettings(id="hr", address=address, scan_timeout_s=10, connect_timeout_s=5)
            adapter = mock.adapter_of(address)
            await one_try(adapter, ctx, settings, False)  # warm-up: first connect
            results = {}
            for scanning in (True, False):
                runs = [await one_try(adapter, ctx, settings, scanning) for _ in range(tries)]
                results[scanning] = runs
    print(f"reconnect after the device returns, {tries} tries each, mock advertising every {scan_interval} s")
    for scanning, label in (
        (True, "device returns while the session scans"),
        (False, "session starts after it is back"),
    ):
        runs = results[scanning]
        print(_line(f"{label}: connected+subscribed", [c for c, _ in runs]))
        print(_line(f"{label}: first reading", [f for _, f in runs]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--scan-interval", type=float, default=0.2)
    args = parser.parse_args()
    asyncio.run(main(args.tries, args.scan_interval))
