"""``iomt-gateway device-tag``: which device is ``ble-5f3a9c1e2b7d``?  (see ``gateway.device_tags``)

Reads the hub's key from the state directory (never creates it: run as root, that would leave a
key the service cannot read) and prints each configured device's tag, or the tag of each
identifier given on the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.config import DEFAULT_CONFIG
from gateway.config.loader import ConfigError, load_config_for_tools
from gateway.device_tags import KEY_FILE, DeviceTagger

PROG = "iomt-gateway device-tag"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description=(__doc__ or "").replace("``", ""),
        epilog="example:\n  sudo iomt-gateway device-tag -c /etc/iomt-gateway/config.yaml\n\n"
        "exit status: 0 success, 1 no key yet or unreadable, 2 usage or config error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "-c", "--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default: {DEFAULT_CONFIG})"
    )
    ap.add_argument("identifiers", nargs="*", help="BLE addresses or serial by-id names (default: the configured ones)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config_for_tools(args.config)
    except ConfigError as e:
        print(f"{PROG}: {e.render()}", file=sys.stderr)
        return 2
    from gateway.config.paths import resolve_paths  # noqa: PLC0415  # the daemon's own idea of the state dir

    state = resolve_paths(args.config, cfg).state_dir
    try:
        tagger = DeviceTagger.load(state, create=False)
    except FileNotFoundError:
        print(f"{PROG}: no {KEY_FILE} in {state} yet: the gateway makes it when it first starts", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"{PROG}: cannot read the device tag key: {e}", file=sys.stderr)
        return 1
    if args.identifiers:
        for identifier in args.identifiers:
            print(f"{tagger.tag(identifier)}  {identifier}")
        return 0
    for patient in cfg.patients:
        for device in patient.devices:
            for identifier in device.hardware_ids:
                print(f"{tagger.tag(identifier)}  {device.id} ({patient.id}, {device.driver}): {identifier}")
    return 0
