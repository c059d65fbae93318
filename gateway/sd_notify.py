"""systemd's notify protocol, self-contained (after systemd's man/notify-selfcontained-example.py).

Does nothing when ``NOTIFY_SOCKET`` is unset (run by hand, in tests, in the demo).
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):  # abstract namespace socket
            addr = "\0" + addr[1:]
        self._addr = addr or None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6

    def send(self, *fields: str) -> None:
        if self._addr is None:
            return
        msg = "\n".join(fields).encode()
        # Non-blocking: a receiver that stops reading fills the datagram queue, and a blocking send
        # would then freeze the whole event loop (seen in a test whose notify socket was not drained).
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as s:
            try:
                s.connect(self._addr)
                s.sendall(msg)
            except OSError:
                pass  # systemd gone or socket full: notification is best effort by design

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def reloading(self) -> None:
        self.send("RELOADING=1")
