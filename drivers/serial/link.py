"""A serial port (or ``socket://`` / ``rfc2217://`` URL) read without blocking the event loop.

pyserial's ``serial_for_url`` opens the port; bytes are read by ``loop.add_reader`` on its file
descriptor — one ``os.read`` per readiness, no thread.  Ports without a descriptor (rfc2217 runs
its own socket thread) are read by one helper thread that hands chunks to the loop.

The link reports a lost port (read error, EOF) as ``LinkLost``; it never reopens anything.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
from dataclasses import dataclass
from typing import Any

import serial

READ_SIZE = 65536
MAX_PENDING = 1 << 20
"""Bytes held for a consumer that is not reading (its sink is blocked).  Beyond this the link stops
reading: the kernel's tty buffer fills and the device's excess is lost there, which the decoders
see as dropped bytes — memory stays bounded whatever the device sends."""


HANGUP_ERRNOS = frozenset({errno.EIO, errno.ENXIO, errno.ENODEV})
"""What a read on a tty returns once its device is gone.  An unplugged USB adapter or a closed pty
master gives EOF or one of these depending on whether a read was already pending when it went,
so both are the same event and read the same in the journal."""


class LinkError(Exception):
    pass


class PortAbsent(LinkError):
    """No such device (unplugged, or not enumerated yet)."""


class PortUnusable(LinkError):
    """The port exists but cannot be opened now (busy, permission, refused connection)."""


class PortConfigError(LinkError):
    """The settings cannot work on this port (bad baud for the driver, not a tty)."""


class LinkLost(LinkError):
    """The open port stopped working (unplug, EOF, read error)."""


@dataclass(frozen=True)
class PortParams:
    url: str
    baud: int
    format: str = "8N1"
    exclusive: bool = True

    def serial_kwargs(self) -> dict[str, Any]:
        bits, parity, stop = int(self.format[0]), self.format[1], self.format[2:]
        return {
            "baudrate": self.baud,
            "bytesize": bits,
            "parity": parity,
            "stopbits": float(stop) if stop == "1.5" else int(stop),
            "timeout": 0,
            "exclusive": self.exclusive if "://" not in self.url else None,
        }


def _open_blocking(p: PortParams) -> serial.SerialBase:
    if "://" not in p.url:
        try:
            mode = os.stat(p.url).st_mode
        except FileNotFoundError:
            raise PortAbsent(f"{p.url}: no such device") from None
        except OSError as e:
            raise PortUnusable(f"{p.url}: {e.strerror}") from e
        if not stat.S_ISCHR(mode):
            raise PortConfigError(f"{p.url}: not a serial device (not a character device)")
    try:
        return serial.serial_for_url(p.url, **p.serial_kwargs())
    except serial.SerialException as e:
        code = e.errno if isinstance(e.errno, int) else None
        if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            raise PortAbsent(f"{p.url}: {e}") from e
        if code in (errno.ENOTTY, errno.EINVAL):
            raise PortConfigError(f"{p.url}: {e}") from e
        if code in (errno.EACCES, errno.EPERM):
            raise PortConfigError(f"{p.url}: permission denied (is the service user in the 'dialout' group?)") from e
        raise PortUnusable(f"{p.url}: {e}") from e
    except ValueError as e:  # pyserial: unsupported baud/format or malformed URL
        raise PortConfigError(f"{p.url}: {e}") from e
    except OSError as e:  # e.g. connection refused for socket://
        raise PortUnusable(f"{p.url}: {e}") from e


class SerialLink:
    """Chunks of bytes as they arrive; ``read()`` returns all bytes received since the last call."""

    def __init__(self, port: serial.SerialBase, loop: asyncio.AbstractEventLoop) -> None:
        self.port = port
        self._loop = loop
        self._chunks: list[bytes] = []
        self._pending = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._lost: LinkLost | None = None
        self._fd: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.bytes_read = 0

    @classmethod
    async def open(cls, params: PortParams) -> SerialLink:
        """Open the port in a worker thread (rfc2217 negotiates over the network); cancellation-safe."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, _open_blocking, params)
        try:
            port = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(_close_if_opened)
            raise
        link = cls(port, loop)
        try:
            link._start()
        except BaseException:
            port.close()
            raise
        return link

    def _start(self) -> None:
        try:
            fd = self.port.fileno()
        except (AttributeError, NotImplementedError, OSError, serial.SerialException):
            fd = None
        if isinstance(fd, int):
            self._fd = fd
            self._loop.add_reader(fd, self._on_readable)
        else:
            self.port.timeout = 0.2
            self._thread = threading.Thread(target=self._thread_reader, name=f"serial:{self.port.name}", daemon=True)
            self._thread.start()

    # -- reception (loop callback or helper thread) ------------------------------------------

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno in HANGUP_ERRNOS:
                self._set_lost(LinkLost(self._hung_up()))
            else:
                self._set_lost(LinkLost(f"read error on {self.port.name}: {os.strerror(e.errno or 0)}"))
            return
        if not data:
            self._set_lost(LinkLost(self._hung_up()))
            return
        self._deliver(data)

    def _hung_up(self) -> str:
        return f"{self.port.name} hung up (unplugged, or its other end closed)"

    def _thread_reader(self) -> None:
        while not self._stop.is_set():
            if self._pending > MAX_PENDING:  # the consumer is behind: let the URL handler's buffer take it
                self._stop.wait(0.05)
                continue
            try:
                data = self.port.read(max(1, self.port.in_waiting))
            except Exception as e:  # whatever the URL handler raises means the link is gone
                if not self._stop.is_set():
                    self._loop.call_soon_threadsafe(self._set_lost, LinkLost(f"read error on {self.port.name}: {e}"))
                return
            if data:
                self._loop.call_soon_threadsafe(self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        self.bytes_read += len(data)
        self._chunks.append(data)
        self._pending += len(data)
        if self._pending > MAX_PENDING and self._fd is not None and not self._paused:
            self._loop.remove_reader(self._fd)
            self._paused = True
        self._wake()

    def _set_lost(self, exc: LinkLost) -> None:
        if self._lost is None:
            self._lost = exc
        self._detach()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- consumer side -----------------------------------------------------------------------

    async def read(self) -> bytes:
        """Wait for bytes; raise ``LinkLost`` once the port is gone and everything before it was read."""
        while not self._chunks:
            if self._lost is not None:
                raise self._lost
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks.clear()
        self._pending = 0
        if self._paused and self._fd is not None:
            self._loop.add_reader(self._fd, self._on_readable)
            self._paused = False
        return data

    def _detach(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._fd = None
        self._stop.set()

    async def close(self) -> None:
        """Stop reading and close the port.  Safe to call twice."""
        self._detach()
        if self._lost is None:
            self._lost = LinkLost(f"{self.port.name} closed")
        self._wake()
        thread, self._thread = self._thread, None
        await asyncio.to_thread(self.port.close)
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)


def _close_if_opened(fut: asyncio.Future[serial.SerialBase]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()
