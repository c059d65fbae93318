"""``iomt-gateway serial-probe PORT``: listen on a serial port and name the protocol, baud rate and format it speaks.

Which protocol is this port speaking?  Use it to choose between ``nonin2``, ``nonin7`` and ``nonin8``.

The port is opened once per candidate line setting (9600 8N1 for Nonin and Masimo, 19200 8O1 for
the Contec, 115200 8N1 for the ECG front-end, unless told otherwise) and listened to for a moment;
the bytes heard are run through every protocol's decoder — decoding is pure, so one capture serves
all protocols.  A protocol matches when its decoder found several frames and most of the bytes
belonged to them.  Nothing is ever written to the port: probing cannot change a device's mode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.serial.link import LinkError, LinkLost, PortParams, SerialLink
from drivers.serial.protocols import PROTOCOLS

DEFAULT_LINE_SETTINGS: tuple[tuple[int, str], ...] = ((9600, "8N1"), (19200, "8O1"), (115200, "8N1"))
MIN_FRAMES = 3
MIN_SHARE = 0.8


@dataclass(frozen=True)
class ProbeResult:
    protocol: str
    baud: int
    format: str
    bytes_in: int
    frames: int
    dropped_bytes: int

    @property
    def share(self) -> float:
        """Share of the bytes heard that belonged to valid frames."""
        return (self.bytes_in - self.dropped_bytes) / self.bytes_in if self.bytes_in else 0.0

    @property
    def matches(self) -> bool:
        return self.frames >= MIN_FRAMES and self.share >= MIN_SHARE


def score(capture: bytes, baud: int, fmt: str) -> list[ProbeResult]:
    """Every protocol's verdict on bytes heard at one line setting (pure)."""
    out = []
    for name, info in PROTOCOLS.items():
        dec = info.make_decoder()
        dec.feed(capture)
        st = dec.stats
        out.append(ProbeResult(name, baud, fmt, st.bytes_in, st.frames, st.dropped_bytes))
    return out


async def listen(params: PortParams, seconds: float) -> bytes:
    """Bytes heard on the port for ``seconds`` (less if the port goes away)."""
    link = await SerialLink.open(params)
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                chunks.append(await link.read())
    except (TimeoutError, LinkLost):
        pass
    finally:
        await link.close()
    return b"".join(chunks)


async def probe(
    port: str, line_settings: Sequence[tuple[int, str]] = DEFAULT_LINE_SETTINGS, seconds: float = 2.0
) -> list[ProbeResult]:
    """Matching (protocol, baud, format) first, best share of framed bytes first.  Raises ``LinkError``."""
    results: list[ProbeResult] = []
    for baud, fmt in line_settings:
        capture = await listen(PortParams(port, baud, fmt), seconds)
        results += score(capture, baud, fmt)
    # A protocol's own default line setting wins a tie (a pty or a socket hears the same at every rate).
    return sorted(
        results,
        key=lambda r: (
            not r.matches,
            -round(r.share, 2),
            (PROTOCOLS[r.protocol].baud, PROTOCOLS[r.protocol].serial_format) != (r.baud, r.format),
        ),
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="iomt-gateway serial-probe",
        description=(__doc__ or "").replace("``", ""),
        epilog="example:\n"
        "  sudo -u iomt-gateway iomt-gateway serial-probe /dev/serial/by-id/usb-FTDI_FT232R_A10KXYZ-if00-port0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("port", help="device path, /dev/serial/by-id/... name, or socket:// URL")
    ap.add_argument("--seconds", type=float, default=2.0, help="listening time per line setting (default 2)")
    ap.add_argument("--baud", type=int, action="append", help="try only these rates (repeatable), with 8N1")
    args = ap.parse_args(argv)
    settings = [(b, "8N1") for b in args.baud] if args.baud else list(DEFAULT_LINE_SETTINGS)
    try:
        results = asyncio.run(probe(args.port, settings, args.seconds))
    except LinkError as e:
        print(f"iomt-gateway serial-probe: cannot listen on {args.port}: {e}", file=sys.stderr)
        return 2
    heard = {(r.baud, r.format): r.bytes_in for r in results}
    for (baud, fmt), n in heard.items():
        print(f"{baud} {fmt}: {n} bytes heard")
    found = [r for r in results if r.matches]
    if not found:
        print(
            "iomt-gateway serial-probe: no known protocol recognised (is the device sending? try longer --seconds)",
            file=sys.stderr,
        )
        return 1
    for r in found:
        print(f"  {r.protocol:<10} at {r.baud} {r.format}: {r.frames} frames, {100 * r.share:.0f} % of bytes framed")
    best = found[0]
    print("\nsuggested device entry:")
    entry = f"id: CHANGE-ME, driver: {best.protocol}, port: {args.port}, baud: {best.baud}, format: {best.format}"
    print(f"  - {{{entry}}}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
