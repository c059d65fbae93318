"""Serial devices under the real supervisor: an unplugged oximeter is retried and comes back on the
same by-id name; the other device's session never notices.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from drivers.serial.settings import ContecSettings, Nonin2Settings
from gateway.clock import SyncPolicy, SystemClock
from gateway.driver_api import DeviceContext, registry
from gateway.records import DeviceEvent, DeviceState, Reading, SampleBlock, VitalReading
from gateway.supervisor import Assignment, BackoffPolicy, SessionState, Supervisor
from tests.serial_pty import FIX, Pty


async def wait_for(cond: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - supervisor counters have no change notification to await
            await asyncio.sleep(0.02)


async def stream_forever(pty: Pty, data: bytes) -> None:
    """A device that keeps talking (50x its real rate) until it is unplugged."""
    while pty.open:
        for i in range(0, len(data), 750):
            if not pty.open:
                return
            await pty.write(data[i : i + 750])
            await asyncio.sleep(0.02)


async def test_unplugged_device_reconnects_and_the_other_is_unaffected(tmp_path: Path) -> None:
    clock = SystemClock(SyncPolicy.ASSUME_SYNCED)
    got: dict[str, list[Reading]] = defaultdict(list)

    async def sink(patient: str, r: Reading) -> None:
        got[r.device_id].append(r)

    def context_for(device_id: str, a: Assignment) -> DeviceContext:
        return DeviceContext(device_id, a.patient, clock, tmp_path)

    ox_link = tmp_path / "by-id" / "usb-Nonin_Medical_Xpod-if00-port0"
    c50_link = tmp_path / "by-id" / "usb-Contec_CMS50D-if00-port0"
    ox, c50 = Pty(ox_link), Pty(c50_link)
    nonin_bytes = (FIX / "nonin2_patient-a_220s.bin").read_bytes()
    contec_bytes = (FIX / "contec_patient-a_220s.bin").read_bytes()
    sup = Supervisor(
        specs=registry(),
        sink=sink,
        clock=clock,
        context_for=context_for,
        backoff=BackoffPolicy(initial_s=0.05, max_s=0.2, config_error_s=0.2, healthy_after_s=60),
    )
    feeders = [
        asyncio.create_task(stream_forever(ox, nonin_bytes)),
        asyncio.create_task(stream_forever(c50, contec_bytes)),
    ]
    sup.apply(
        {
            "ox-1": Assignment("p-1", Nonin2Settings(id="ox-1", port=str(ox_link))),
            "c50-1": Assignment("p-2", ContecSettings(id="c50-1", port=str(c50_link))),
        }
    )

    def states(dev: str) -> list[DeviceState]:
        return [r.state for r in got[dev] if isinstance(r, DeviceEvent)]

    def vitals(dev: str) -> int:
        return sum(isinstance(r, VitalReading) for r in got[dev])

    try:
        await wait_for(lambda: vitals("ox-1") >= 6 and vitals("c50-1") >= 4)
        ox.unplug()
        await wait_for(lambda: DeviceState.DISCONNECTED in states("ox-1"))
        info = {s.device_id: s for s in sup.sessions()}
        # While the adapter is gone, the supervisor keeps trying (DriverConnectFailed each time)...
        await wait_for(lambda: info["ox-1"].failures >= 3)
        assert info["ox-1"].state in (SessionState.BACKOFF, SessionState.CONNECTING)
        assert "no such device" in (info["ox-1"].last_error or "")
        # ...and the Contec session goes on as if nothing happened.
        before = vitals("c50-1")
        await wait_for(lambda: vitals("c50-1") >= before + 2)
        assert info["c50-1"].connects == 1 and info["c50-1"].state is SessionState.RUNNING

        ox = Pty(ox_link)  # plugged in again: a new /dev/pts node behind the same name
        feeders.append(asyncio.create_task(stream_forever(ox, nonin_bytes)))
        n_before = vitals("ox-1")
        await wait_for(lambda: vitals("ox-1") >= n_before + 4)
        assert info["ox-1"].connects == 2
        link_states = [s for s in states("ox-1") if s in (DeviceState.CONNECTED, DeviceState.DISCONNECTED)]
        assert link_states == [DeviceState.CONNECTED, DeviceState.DISCONNECTED, DeviceState.CONNECTED]
        assert states("c50-1").count(DeviceState.DISCONNECTED) == 0
        # The new session's pleth restarts at index 0, not glued onto the old one.
        reconnect_at = max(i for i, r in enumerate(got["ox-1"]) if isinstance(r, DeviceEvent)
                           and r.state is DeviceState.CONNECTED)  # fmt: skip
        first_block = next(r for r in got["ox-1"][reconnect_at:] if isinstance(r, SampleBlock))
        assert first_block.first_index == 0
    finally:
        await sup.stop_all()
        ox.unplug()
        c50.unplug()
        for f in feeders:
            f.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await f
    assert sup.task_failures() == {}
