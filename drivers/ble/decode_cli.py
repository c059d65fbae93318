"""``iomt-gateway decode PROFILE HEX...``: decode BLE notification payloads given as hex, print JSON lines.

Each argument is one payload; spaces, colons and dashes inside it are ignored, so
``"1E 55 32 00 21 00"`` and ``1e5532002100`` are the same.  Exit status 0 when every payload
decoded, 1 when at least one was rejected (the reason is printed), 2 on bad usage.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from drivers.ble import blood_pressure, glucose, heart_rate, plx, polar_pmd, thermometer, weight
from drivers.ble.wire import DecodeError, DeviceDateTime


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, DeviceDateTime):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return obj.name.lower()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        # Derived values a technician wants to check against the device's display.
        for extra in ("rr_intervals_ms", "celsius", "weight_kg", "height_m", "mg_dl", "device_time", "done"):
            if hasattr(obj, extra):
                out[extra] = _jsonable(getattr(obj, extra))
        return out
    if isinstance(obj, tuple | list):
        return [_jsonable(x) for x in obj]
    return obj


def _polar(data: bytes) -> object:
    if data[:1] == b"\xf0":
        return polar_pmd.decode_control(data)
    frame = polar_pmd.decode_ecg(data)
    return {
        "sensor_time_ns": frame.sensor_time_ns,
        "last_sample_utc": datetime.fromtimestamp(frame.last_sample_unix, UTC).isoformat(),
        "samples_uv": list(frame.samples_uv),
    }


def _glucose(data: bytes) -> object:
    # RACP responses (0x2A52) are 4 bytes; a measurement is at least 10, so the length tells them apart.
    if len(data) == 4:
        return glucose.decode_racp(data)
    return glucose.decode(data)


PROFILES: dict[str, Callable[[bytes], object]] = {
    "ble-heart-rate": heart_rate.decode,
    "ble-plx-continuous": plx.decode_continuous,
    "ble-plx-spot": plx.decode_spot_check,
    "ble-blood-pressure": blood_pressure.decode,
    "ble-thermometer": thermometer.decode,
    "ble-weight": weight.decode,
    "ble-glucose": _glucose,
    "polar-ecg": _polar,
}


_EXAMPLES = {
    "ble-heart-rate": '"1E 55 32 00 21 00"',
    "ble-blood-pressure": '"00 78 00 50 00 5D 00"',
}


def parse_hex(text: str) -> bytes:
    cleaned = "".join(ch for ch in text if ch not in " :-_\t")
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    return bytes.fromhex(cleaned)


def run(profile: str, argv: list[str]) -> int:
    decode = PROFILES[profile]
    if not argv or argv[0] in ("-h", "--help"):
        example = _EXAMPLES.get(profile, "'<payload as hex, e.g. copied from nRF Connect>'")
        usage = (
            f"usage: iomt-gateway decode {profile} HEX [HEX...]\n\n"
            "Decode BLE notification payloads given as hex (spaces, colons and dashes ignored), one JSON line each.\n"
            f"example:\n  iomt-gateway decode {profile} {example}\n\n"
            "exit status: 0 every payload decoded, 1 one was rejected, 2 usage error."
        )
        print(usage, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    status = 0
    for arg in argv:
        try:
            data = parse_hex(arg)
        except ValueError:
            print(json.dumps({"input": arg, "error": "not hexadecimal"}))
            status = 1
            continue
        try:
            decoded = decode(data)
        except DecodeError as e:
            print(json.dumps({"input": data.hex(" "), "error": str(e)}))
            status = 1
            continue
        print(json.dumps({"input": data.hex(" "), "decoded": _jsonable(decoded)}))
    return status


def _entry(profile: str) -> Callable[[list[str]], int]:
    def main(argv: list[str]) -> int:
        return run(profile, argv)

    main.__name__ = profile.replace("-", "_")
    return main


heart_rate_cmd = _entry("ble-heart-rate")
plx_continuous_cmd = _entry("ble-plx-continuous")
plx_spot_cmd = _entry("ble-plx-spot")
blood_pressure_cmd = _entry("ble-blood-pressure")
thermometer_cmd = _entry("ble-thermometer")
weight_cmd = _entry("ble-weight")
glucose_cmd = _entry("ble-glucose")
polar_ecg_cmd = _entry("polar-ecg")
