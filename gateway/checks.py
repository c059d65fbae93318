"""One line of ``iomt-gateway doctor``: a check that passed or failed, and the fix in words.

Kept apart from the doctor so driver packages can contribute checks of their own (BlueZ and the
adapter for BLE devices, the configured serial ports) through the ``iomt_gateway.checks`` entry-point
group, without the gateway importing a concrete driver: each entry is
``callable(devices: list[DriverSettings]) -> list[Check]`` and must never write to a device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.driver_api import DriverSettings

CHECKS_GROUP = "iomt_gateway.checks"


@dataclass(frozen=True)
class Check:
    ok: bool
    title: str  # what was checked: "broker DNS", "serial port ox-1"
    detail: str  # what was found, in words
    fix: str = ""  # what to do, when not ok

    def render(self) -> str:
        mark = "✓" if self.ok else "✗"
        line = f"{mark} {self.title}: {self.detail}"
        if not self.ok and self.fix:
            line += f"\n    fix: {self.fix}"
        return line


DeviceChecks = Callable[[Sequence[DriverSettings]], list[Check]]
