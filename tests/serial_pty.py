"""A pseudo-terminal standing in for a USB-serial adapter, for the serial driver tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from pathlib import Path

FIX = Path(__file__).resolve().parent.parent / "hil_fixtures" / "serial"


class Pty:
    """One 'USB adapter': a pty pair whose slave is reachable through a stable symlink."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # bytes written before pyserial configures the port pass unchanged
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(self.path)
        self.open = True

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.open:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                await asyncio.sleep(0.002)
                continue
            view = view[n:]

    async def feed(self, data: bytes, chunk: int, interval_s: float) -> None:
        for i in range(0, len(data), chunk):
            await self.write(data[i : i + chunk])
            await asyncio.sleep(interval_s)

    def unplug(self) -> None:
        """What the kernel does when the adapter goes: the device node and its symlink vanish."""
        if self.open:
            self.open = False
            os.close(self.master)
            os.close(self._slave)
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
