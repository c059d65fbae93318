"""``iomt-gateway ports``: the serial ports on this hub, with the stable name to put in the config.

For each port pyserial finds: its ``/dev/serial/by-id/`` name (survives re-plugging; the kernel name
``/dev/ttyUSB0`` does not), the USB vendor and product, what the USB chip is, and — with ``-c`` — which
configured device uses it.  Nothing is opened: to learn which protocol a device speaks, run
``iomt-gateway serial-probe`` on the by-id name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BY_ID = Path("/dev/serial/by-id")

# USB-serial bridge chips (vendor, product) -> chip.  They carry any device's serial line, so the chip
# does not tell the protocol; it tells the technician which cable is which.
BRIDGES: dict[tuple[int, int], str] = {
    (0x0403, 0x6001): "FTDI FT232R USB-serial",
    (0x0403, 0x6015): "FTDI FT231X USB-serial",
    (0x067B, 0x2303): "Prolific PL2303 USB-serial",
    (0x10C4, 0xEA60): "Silicon Labs CP210x USB-serial",
    (0x1A86, 0x7523): "WCH CH340 USB-serial",
}


@dataclass(frozen=True)
class PortRow:
    device: str
    by_id: str | None
    usb: str | None  # "0403:6001"
    description: str
    chip: str | None
    configured: str | None  # "ox-1 (nonin2)"
    hint: str


def by_id_names(directory: Path = BY_ID) -> dict[str, str]:
    """Kernel device path -> its /dev/serial/by-id/ name."""
    out: dict[str, str] = {}
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return out
    for link in entries:
        out.setdefault(os.path.realpath(link), str(link))
    return out


def rows(ports: Iterable[Any], by_id: Mapping[str, str], configured: Mapping[str, str]) -> list[PortRow]:
    """One row per port (pyserial ``ListPortInfo``s); ``configured``: real device path -> "id (driver)"."""
    out = []
    for p in sorted(ports, key=lambda p: str(p.device)):
        real = os.path.realpath(p.device)
        usb = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else None
        chip = BRIDGES.get((p.vid, p.pid)) if usb else None
        stable = by_id.get(real)
        used = configured.get(real)
        if used:
            hint = "in the config"
        elif usb is None:
            hint = "built-in or virtual port: not a plugged-in device"
        else:
            hint = f"iomt-gateway serial-probe {stable or p.device}"
        desc = " ".join(x for x in (p.manufacturer, p.product) if x) or (
            p.description if p.description != "n/a" else ""
        )
        out.append(PortRow(p.device, stable, usb, desc, chip, used, hint))
    return out


def _configured(config: Path) -> dict[str, str]:
    from gateway.config.loader import load_config_for_tools  # noqa: PLC0415

    cfg = load_config_for_tools(config)
    out = {}
    for p in cfg.patients:
        for d in p.devices:
            port = getattr(d, "port", None)
            if isinstance(port, str) and port.startswith("/"):
                out[os.path.realpath(port)] = f"{d.id} ({d.driver})"
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="iomt-gateway ports",
        description=(__doc__ or "").replace("``", ""),
        epilog="example:\n  iomt-gateway ports -c /etc/iomt-gateway/config.yaml\n\n"
        "exit status: 0 success, 1 runtime failure, 2 usage or config error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("-c", "--config", type=Path, help="also show which configured device uses each port")
    ap.add_argument("--json", action="store_true", help="one JSON object per port")
    args = ap.parse_args(argv)
    configured: dict[str, str] = {}
    if args.config is not None:
        from gateway.config.errors import ConfigError  # noqa: PLC0415

        try:
            configured = _configured(args.config)
        except ConfigError as e:
            print(f"iomt-gateway ports: {e.render()}", file=sys.stderr)
            return 2
    from serial.tools import list_ports  # noqa: PLC0415 - pyserial only when the command runs

    found = rows(list_ports.comports(), by_id_names(), configured)
    if args.json:
        for r in found:
            print(json.dumps(asdict(r)))
        return 0
    if not found:
        print("no serial ports found (is the USB-serial adapter plugged in? dmesg | tail)", file=sys.stderr)
        return 0
    for r in found:
        print(r.by_id or r.device)
        if r.by_id:
            print(f"    kernel name: {r.device}")
        if r.usb:
            print(
                f"    USB {r.usb}" + (f" {r.description}" if r.description else "") + (f" — {r.chip}" if r.chip else "")
            )
        if r.configured:
            print(f"    configured: {r.configured}")
        print(f"    next: {r.hint}")
    missing = set(configured) - {os.path.realpath(r.device) for r in found}
    for real in sorted(missing):
        print(f"configured but NOT connected: {configured[real]} on {real}", file=sys.stderr)
    return 1 if missing else 0
