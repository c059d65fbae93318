"""Doctor checks for serial devices: each configured port is there (its by-id name resolved), and who may open it.

Nothing is opened: a port in use by the running daemon is locked, and opening it would not tell more than
its presence does.  URL ports (``socket://``, ``rfc2217://``) are not probed, for the same reason.
"""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Sequence

from drivers.serial.settings import SerialSettings
from gateway.checks import Check
from gateway.driver_api import DriverSettings


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check(devices: Sequence[DriverSettings]) -> list[Check]:
    out = []
    for d in devices:
        if not isinstance(d, SerialSettings):
            continue
        title = f"serial port of {d.id} ({getattr(d, 'driver', 'serial')})"
        if "://" in d.port:
            out.append(Check(True, title, f"{d.port} (network port: not probed)"))
            continue
        try:
            st = os.stat(d.port)
        except FileNotFoundError:
            out.append(
                Check(
                    False,
                    title,
                    f"{d.port} is not there",
                    "plug the device in (and its USB-serial adapter); `iomt-gateway ports` lists what is connected",
                )
            )
            continue
        except OSError as e:
            out.append(Check(False, title, f"{d.port}: {e.strerror or e}", "check the path"))
            continue
        real = os.path.realpath(d.port)
        name = d.port if real == d.port else f"{d.port} -> {real}"
        if not stat.S_ISCHR(st.st_mode):
            out.append(Check(False, title, f"{name} is not a serial device", "use the /dev/serial/by-id/ name"))
            continue
        out.append(Check(True, title, f"{name} (group {_group(st.st_gid)}, mode {stat.S_IMODE(st.st_mode):04o})"))
    return out
