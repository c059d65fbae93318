"""Learning whether NTP has set the clock without a syscall the unit's filter refuses: timesyncd's
flag file, then timedated's NTPSynchronized on the system bus (here a private bus serving the
timedate1 property), then a read-only adjtimex."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property

from gateway import clock_sync
from gateway.clock import SyncPolicy, SystemClock
from gateway.records import ClockQuality
from tests.ble.harness import _BUS_CONFIG, find_dbus_daemon, wait_for_bus


class _Timedate(ServiceInterface):
    """The one property of org.freedesktop.timedate1 the gateway reads."""

    def __init__(self, synced: bool) -> None:
        super().__init__("org.freedesktop.timedate1")
        self.synced = synced

    @dbus_property(access=PropertyAccess.READ)
    def NTPSynchronized(self) -> "b":  # type: ignore[name-defined]  # noqa: F821, UP037 (a D-Bus signature)
        return self.synced


@pytest.fixture
def system_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    daemon = find_dbus_daemon()
    if daemon is None:
        pytest.skip("dbus-daemon not found: apt-get install dbus")
    folder = Path(tempfile.mkdtemp(prefix="iomt-clk-"))  # socket paths are limited to ~100 bytes
    sock = folder / "bus"
    (folder / "bus.conf").write_text(_BUS_CONFIG.format(path=sock))
    proc = subprocess.Popen([daemon, f"--config-file={folder / 'bus.conf'}", "--nofork", "--nopidfile"])
    try:
        wait_for_bus(sock, proc)
        address = f"unix:path={sock}"
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        monkeypatch.setattr(clock_sync, "TIMESYNC_FLAG", str(folder / "no-such-flag"))
        yield address
    finally:
        proc.kill()
        proc.wait()


async def _serve_timedate(address: str, synced: bool) -> tuple[MessageBus, _Timedate]:
    bus = await MessageBus(bus_address=address).connect()
    iface = _Timedate(synced)
    bus.export("/org/freedesktop/timedate1", iface)
    await bus.request_name("org.freedesktop.timedate1")
    return bus, iface


@pytest.mark.parametrize("synced", [True, False])
async def test_timedated_answers_for_the_host(system_bus: str, synced: bool) -> None:
    bus, _ = await _serve_timedate(system_bus, synced)
    try:
        assert await clock_sync.timedated_synchronised() is synced
        assert await clock_sync.host_clock_synchronised() is synced
    finally:
        bus.disconnect()


async def test_bus_without_timedated_is_unknown_and_falls_to_the_kernel(
    system_bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    del system_bus
    assert await clock_sync.timedated_synchronised() is None
    monkeypatch.setattr(clock_sync, "adjtimex_synchronised", lambda: False)
    assert await clock_sync.host_clock_synchronised() is False


async def test_no_system_bus_at_all_is_unknown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'nothing'}")
    assert await clock_sync.timedated_synchronised() is None


async def test_timesync_flag_wins_without_asking_the_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    monkeypatch.setattr(clock_sync, "TIMESYNC_FLAG", str(flag))
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'nothing'}")
    assert await clock_sync.host_clock_synchronised() is True


async def test_system_clock_follows_timedated_until_synchronised(system_bus: str) -> None:
    bus, iface = await _serve_timedate(system_bus, synced=False)
    try:
        clock = SystemClock(SyncPolicy.AUTO)
        await clock.refresh()
        assert clock.quality() is ClockQuality.UNSYNCED
        iface.synced = True
        await clock.refresh()
        assert clock.quality() is ClockQuality.SYNCED
        iface.synced = False  # a slewing clock may drop the flag for a moment: stay synchronised
        await clock.refresh()
        assert clock.quality() is ClockQuality.SYNCED
    finally:
        bus.disconnect()


def test_refused_adjtimex_is_unknown_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    class _Refusing:  # what libc returns when seccomp answers EPERM
        @staticmethod
        def adjtimex(_buf: object) -> int:
            return -1

    monkeypatch.setattr(clock_sync, "_libc", _Refusing)
    assert clock_sync.adjtimex_synchronised() is None
