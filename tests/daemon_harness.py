"""Run the real daemon as a child process: config files, readiness through sd_notify, signals.

The test plays systemd: it creates the ``NOTIFY_SOCKET`` datagram socket, so it learns when the
daemon is ready (``READY=1``) and sees ``STATUS=``/``STOPPING=1`` exactly as systemd would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import keyring

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "hil_fixtures"


def replay_device(device_id: str, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"id": device_id, "driver": "replay"}
    for k, v in kw.items():
        d[k] = str(v) if isinstance(v, Path) else v
    return d


def make_keyring(directory: Path) -> Path:
    path = directory / "keyring"
    keyring.init(path)
    return path


def write_config(
    directory: Path,
    *,
    broker_url: str,
    patients: dict[str, list[dict[str, Any]]],
    name: str = "gateway.yaml",
    gateway_id: str = "gw-test",
    extra: dict[str, Any] | None = None,
) -> Path:
    cfg: dict[str, Any] = {
        "gateway": {"id": gateway_id},
        "clock": {"sync": "assume_synced"},
        "upstream": {"url": broker_url, "topic_prefix": "t", "backoff_max_s": 2.0, "publish_timeout_s": 5},
        # the keyring is made once per test folder, as the install script's `keys init` would
        "storage": {"path": str(directory / "state"), "keyring": str(make_keyring(directory))},
        "logging": {"level": "info", "format": "json"},
        "patients": [{"id": pid, "devices": devs} for pid, devs in patients.items()],
    }
    for section, values in (extra or {}).items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**cfg[section], **values}
        else:
            cfg[section] = values
    path = directory / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class DaemonProcess:
    """``iomt-gateway run -c CONFIG`` as a child, with a private notify socket."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.notifications: list[str] = []
        self.log_path = workdir / "daemon.log"
        self._sock: socket.socket | None = None

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> None:
        sock_path = self.workdir / f"notify-{os.getpid()}-{time.monotonic_ns()}.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        self._sock.settimeout(0.2)
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "4000000"}
        env.pop("WATCHDOG_PID", None)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "-c", str(self.config)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait_ready:
            self.wait_for("READY=1", timeout)

    def poll_notifications(self) -> list[str]:
        assert self._sock is not None
        got: list[str] = []
        while True:
            try:
                data = self._sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                break
            got.extend(data.decode().split("\n"))
            self._sock.settimeout(0.0)
        self._sock.settimeout(0.2)
        self.notifications.extend(got)
        return got

    def wait_for(self, field: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if field in self.notifications:
                return
            assert self.proc is not None
            if self.proc.poll() is not None and field not in self.poll_notifications():
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {field}:\n{self.log_tail()}")
            self.poll_notifications()
        raise AssertionError(f"no {field} within {timeout} s:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (raises if it takes longer than ``timeout``).

        The default leaves room for a loaded CI machine (a stop overran 10 s at load ~5 on 2 cores);
        the unit's TimeoutStopSec, the contract systemd holds the daemon to, is checked on its own
        by test_daemon_e2e.py::test_sigterm_stops_quickly_with_everything_on_disk and by the
        container test under systemd.
        """
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def log_events(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (syslog prefix stripped)."""
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            line = raw[raw.index(">") + 1 :] if raw.startswith("<") and ">" in raw[:4] else raw
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out


def events_named(events: Iterable[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == name]


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Any:
    """Makes DaemonProcess objects in the test's directory and kills whatever is left at teardown."""
    made: list[DaemonProcess] = []

    def make(config: Path) -> DaemonProcess:
        d = DaemonProcess(config, tmp_path)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
