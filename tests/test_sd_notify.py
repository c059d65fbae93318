"""sd_notify is best effort: a notify socket nobody reads must never block the daemon."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from gateway.sd_notify import Notifier


def test_a_full_notify_socket_does_not_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))  # bound, never read: its queue fills after a few datagrams
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        notifier = Notifier()
        sent = threading.Event()

        def flood() -> None:
            for _ in range(500):
                notifier.watchdog()
            sent.set()

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        t.join(timeout=20)
        assert sent.is_set(), "Notifier.send blocked on a full notify socket"
        receiver.settimeout(1)
        assert receiver.recv(64) == b"WATCHDOG=1"  # the first ones did arrive
