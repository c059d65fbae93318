"""``iomt-gateway scan``: list nearby BLE devices and the health services they advertise.

Helps a technician fill in the YAML: each line names the driver to use for the device.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass

from bleak import BleakScanner
from bleak.exc import BleakError

from drivers.ble import blood_pressure, glucose, heart_rate, plx, polar_pmd, thermometer, weight

# Advertised service -> (what it is, driver name for the config)
HEALTH_SERVICES: dict[str, tuple[str, str]] = {
    heart_rate.SERVICE: ("heart rate", "ble-heart-rate"),
    plx.SERVICE: ("pulse oximeter", "ble-pulse-oximeter"),
    blood_pressure.SERVICE: ("blood pressure", "ble-blood-pressure"),
    thermometer.SERVICE: ("thermometer", "ble-thermometer"),
    weight.SERVICE: ("weight scale", "ble-weight"),
    glucose.SERVICE: ("glucose", "ble-glucose"),
    polar_pmd.SERVICE: ("Polar ECG (PMD)", "polar-ecg"),
}


@dataclass(frozen=True)
class Found:
    address: str
    name: str
    rssi: int
    services: list[str]
    drivers: list[str]


def summarise(address: str, name: str | None, rssi: int, service_uuids: list[str]) -> Found:
    known = [HEALTH_SERVICES[u.lower()] for u in service_uuids if u.lower() in HEALTH_SERVICES]
    # Polar straps advertise only Heart Rate; their name gives the ECG away.
    if name and name.startswith("Polar H10") and ("Polar ECG (PMD)", "polar-ecg") not in known:
        known.append(("Polar ECG (PMD)", "polar-ecg"))
    return Found(address, name or "", rssi, [k[0] for k in known], [k[1] for k in known])


async def scan(adapter: str, seconds: float) -> list[Found]:
    found = await BleakScanner.discover(timeout=seconds, return_adv=True, bluez={"adapter": adapter})
    out = [
        summarise(dev.address, adv.local_name or dev.name, adv.rssi, adv.service_uuids) for dev, adv in found.values()
    ]
    return sorted(out, key=lambda f: (not f.drivers, -f.rssi))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="iomt-gateway scan",
        description=(__doc__ or "").replace("``", ""),
        epilog="example:\n  sudo -u iomt-gateway iomt-gateway scan --seconds 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--adapter", default="hci0", help="local adapter (default hci0)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to listen (default 10)")
    parser.add_argument("--all", action="store_true", help="also list devices without a health service")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    # ``iomt-gateway scan -- --seconds 5``: the CLI hands plug-in verbs their words after a "--".
    args = parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)
    try:
        found = asyncio.run(scan(args.adapter, args.seconds))
    except (BleakError, OSError, EOFError) as e:
        print(
            f"iomt-gateway scan: scan on {args.adapter} failed: {e} (is BlueZ running, is {args.adapter} there?)",
            file=sys.stderr,
        )
        return 1
    shown = [f for f in found if f.drivers or args.all]
    for f in shown:
        if args.json:
            print(json.dumps(asdict(f)))
        else:
            what = ", ".join(f"{s} -> driver: {d}" for s, d in zip(f.services, f.drivers, strict=True)) or "-"
            print(f"{f.address}  {f.rssi:>4} dBm  {f.name or '?':<24} {what}")
    if not shown and not args.json:
        print(f"iomt-gateway scan: no health devices heard on {args.adapter} in {args.seconds:g} s", file=sys.stderr)
    return 0
