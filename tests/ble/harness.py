"""BLE harness: a private D-Bus bus and bluezoo (patched, see bluezoo_patched.py), for tests and benches.

``hci0`` is the gateway's adapter; ``hci1``… are emulated devices, one per adapter (bluezoo reports an
advertising adapter as a device with the adapter's address).  Needs ``dbus-daemon`` (Debian: ``dbus``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus

CENTRAL = "00:11:22:33:44:55"
PERIPHERALS = ["AA:BB:CC:DD:EE:01", "AA:BB:CC:DD:EE:02", "AA:BB:CC:DD:EE:03"]
ROOT = Path(__file__).resolve().parents[2]

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="*"/>
  </policy>
</busconfig>
"""


def find_dbus_daemon() -> str | None:
    for candidate in ("/usr/bin/dbus-daemon", shutil.which("dbus-daemon")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class MockBluez:
    address: str  # D-Bus address of the private bus
    central: str
    peripherals: list[str]  # device addresses; index i is adapter hci{i+1}
    log: Path

    def adapter_of(self, address: str) -> str:
        return f"hci{self.peripherals.index(address) + 1}"


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def _wait_ready(bus_address: str, adapters: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + 15.0
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"bluezoo exited ({proc.returncode}):\n{await asyncio.to_thread(_tail, log)}")
        try:
            bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM).connect()
            try:
                reply = await bus.call(
                    Message(
                        destination="org.bluez",
                        path="/",
                        interface="org.freedesktop.DBus.ObjectManager",
                        member="GetManagedObjects",
                    )
                )
                if reply is not None and reply.body:
                    paths = reply.body[0]
                    if sum(1 for p in paths if p.startswith("/org/bluez/hci")) >= adapters:
                        return
            finally:
                bus.disconnect()
        except (OSError, EOFError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"bluezoo did not come up:\n{await asyncio.to_thread(_tail, log)}")
        await asyncio.sleep(0.05)


def wait_for_bus(sock: Path, proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """Wait until dbus-daemon accepts connections on ``sock``.  The socket file appears at bind(),
    before listen(): a client that connects then is refused (a flaky clock-sync test, CI)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"dbus-daemon exited with {proc.returncode}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(sock))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.01)


def _spawn(tmp_path: Path, daemon: str, sock: Path, scan_interval_s: float) -> list[subprocess.Popen[bytes]]:
    """Start dbus-daemon, wait for its socket, start bluezoo on it (blocking: run in a thread)."""
    conf = tmp_path / "bus.conf"
    conf.write_text(_BUS_CONFIG.format(path=sock))
    procs: list[subprocess.Popen[bytes]] = []
    with open(tmp_path / "dbus-daemon.log", "wb") as out:
        procs.append(
            subprocess.Popen([daemon, f"--config-file={conf}", "--nofork", "--nopidfile"], stdout=out, stderr=out)
        )
    wait_for_bus(sock, procs[0])
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={sock}"}
    cmd = [sys.executable, "-m", "tests.ble.bluezoo_patched", "--scan-interval", str(scan_interval_s), "-a", CENTRAL]
    if os.environ.get("BLUEZOO_VERBOSE"):
        cmd.append("-v")
    for p in PERIPHERALS:
        cmd += ["-a", p]
    with open(tmp_path / "bluezoo.log", "wb") as out:
        procs.append(subprocess.Popen(cmd, stdout=out, stderr=out, env=env, cwd=ROOT))
    return procs


def _stop(procs: list[subprocess.Popen[bytes]], sock_dir: Path) -> None:
    for proc in reversed(procs):
        proc.terminate()
    for proc in reversed(procs):
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    shutil.rmtree(sock_dir, ignore_errors=True)


def release_bleak_bus() -> None:
    """Close this loop's bleak BlueZ manager connection before its bus goes away.

    bleak keeps one D-Bus connection per event loop; when the private bus is killed under it, dbus-fast
    leaves a "Future exception was never retrieved: EOFError" on stderr.  Private bleak API: harness only.
    """
    from bleak.backends.bluezdbus import manager  # noqa: PLC0415 - only where bleak is wanted

    instance = manager._global_instances.pop(asyncio.get_running_loop(), None)
    bus = getattr(instance, "_bus", None)
    if bus is not None and bus.connected:
        bus.disconnect()


class DbusDaemonMissing(RuntimeError):
    pass


@asynccontextmanager
async def running_mock_bluez(workdir: Path, scan_interval_s: float = 0.2) -> AsyncIterator[MockBluez]:
    """dbus-daemon + patched bluezoo with hci0 (gateway) and three peripheral adapters; killed on exit.

    The caller points ``DBUS_SYSTEM_BUS_ADDRESS`` at ``MockBluez.address`` for its own process."""
    daemon = find_dbus_daemon()
    if daemon is None:
        raise DbusDaemonMissing("dbus-daemon not found: apt-get install dbus")
    # Unix socket paths are limited to ~100 bytes: keep the bus in a short directory.
    sock_dir = Path(tempfile.mkdtemp(prefix="iomt-ble-"))
    sock = sock_dir / "bus"
    address = f"unix:path={sock}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = await asyncio.to_thread(_spawn, workdir, daemon, sock, scan_interval_s)
        await _wait_ready(address, 1 + len(PERIPHERALS), procs[-1], workdir / "bluezoo.log")
        yield MockBluez(address, CENTRAL, list(PERIPHERALS), workdir / "bluezoo.log")
    finally:
        release_bleak_bus()
        await asyncio.to_thread(_stop, procs, sock_dir)
