"""Settings of the serial drivers and their registry entries (light: pydantic only, no pyserial).

One driver name per protocol — the same names as ``iomt-gateway decode``::

    devices:
      - id: spo2-bed3
        driver: nonin2
        port: /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A9XYZ-if00-port0
      - id: ecg-bed3
        driver: ecgstream
        port: socket://10.0.0.7:7000
"""

from __future__ import annotations

import os
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from gateway.driver_api import DriverSettings, DriverSpec

# pyserial's list of POSIX rates; a typo like 96000 is refused here rather than by the kernel.
STANDARD_BAUDS = frozenset(
    (50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400,
     460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000)
)  # fmt: skip
URL_SCHEMES = ("socket", "rfc2217", "loop", "spy")
_FORMAT = re.compile(r"^[5-8][NEOMS](1|1\.5|2)$")


class SerialSettings(DriverSettings):
    port: str = Field(
        description="Device path (/dev/ttyUSB0, better /dev/serial/by-id/...) or URL: socket://host:port, "
        "rfc2217://host:port"
    )
    baud: int = Field(9600, description="Bits per second")
    format: str = Field("8N1", description="Data bits, parity (N/E/O/M/S), stop bits, e.g. 8N1")
    silence_timeout_s: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="No valid frame for this long means the link is gone; default: the protocol's "
        "(5 frame periods, at least 3 s)",
    )
    exclusive: bool = Field(True, description="Lock the port so no other program reads it at the same time")

    @property
    def hardware_ids(self) -> tuple[str, ...]:
        # A by-id name embeds the USB adapter's serial number; /dev/ttyUSB0 or a URL identifies nothing.
        return (self.port,) if self.port.startswith("/dev/serial/by-id/") else ()

    @field_validator("port")
    @classmethod
    def _port(cls, v: str) -> str:
        if "://" in v:
            parts = urlsplit(v)
            if parts.scheme not in URL_SCHEMES:
                raise ValueError(f"URL scheme {parts.scheme!r} is not supported (use one of {', '.join(URL_SCHEMES)})")
            if parts.scheme in ("socket", "rfc2217"):
                try:
                    port = parts.port
                except ValueError:
                    port = None
                if not parts.hostname or port is None:
                    raise ValueError(f"{parts.scheme}:// needs host:port, e.g. {parts.scheme}://10.0.0.7:7000")
            return v
        if not v.startswith("/"):
            raise ValueError(
                "must be an absolute device path (/dev/ttyUSB0, /dev/serial/by-id/...) or a socket:// or rfc2217:// URL"
            )
        return v

    def exclusive_link(self) -> tuple[str, str, str] | None:
        # The port is locked at runtime; two names of one device (by-id link and ttyUSB0) are one port.
        port = os.path.realpath(self.port) if self.port.startswith("/") else self.port
        return ("port", "serial port", port)

    @field_validator("baud")
    @classmethod
    def _baud(cls, v: int) -> int:
        if v not in STANDARD_BAUDS:
            raise ValueError(f"{v} is not a standard baud rate (e.g. 9600, 19200, 115200)")
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        v = v.upper()
        if not _FORMAT.match(v):
            raise ValueError("must be data bits 5-8, parity N/E/O/M/S, stop bits 1/1.5/2, e.g. 8N1 or 8O1")
        return v


class Nonin2Settings(SerialSettings):
    driver: Literal["nonin2"] = "nonin2"


class Nonin7Settings(SerialSettings):
    driver: Literal["nonin7"] = "nonin7"


class Nonin8Settings(SerialSettings):
    driver: Literal["nonin8"] = "nonin8"


class MasimoSettings(SerialSettings):
    driver: Literal["masimo"] = "masimo"


class ContecSettings(SerialSettings):
    driver: Literal["contec"] = "contec"
    baud: int = Field(19200, description="Bits per second (the legacy protocol runs at 19200)")
    format: str = Field("8O1", description="Data bits, parity, stop bits (the CMS50D+ uses odd parity: 8O1)")
    vitals_every: int = Field(
        60, ge=1, le=600, description="Emit SpO2/PR every N packets (60 = once a second); pleth is always sent"
    )


class EcgStreamSettings(SerialSettings):
    driver: Literal["ecgstream"] = "ecgstream"
    baud: int = Field(115200, description="Bits per second")


_FACTORY = "drivers.serial.driver:SerialDriver"

NONIN2_SPEC = DriverSpec("nonin2", Nonin2Settings, _FACTORY, "Nonin pulse oximeter, serial Data Format #2")
NONIN7_SPEC = DriverSpec("nonin7", Nonin7Settings, _FACTORY, "Nonin pulse oximeter, serial Data Format #7")
NONIN8_SPEC = DriverSpec("nonin8", Nonin8Settings, _FACTORY, "Nonin pulse oximeter, serial Data Format #8")
MASIMO_SPEC = DriverSpec("masimo", MasimoSettings, _FACTORY, "Masimo Radical-7 serial ASCII output")
CONTEC_SPEC = DriverSpec("contec", ContecSettings, _FACTORY, "Contec CMS50D+ pulse oximeter (legacy protocol)")
ECGSTREAM_SPEC = DriverSpec(
    "ecgstream", EcgStreamSettings, _FACTORY, "ECG front-end over serial (docs/ecg-frontend-protocol.md)"
)
