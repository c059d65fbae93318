"""The supervisor: retries with backoff, isolation between devices, reload by difference."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.clock import ManualClock
from gateway.driver_api import DeviceContext
from gateway.records import DeviceEvent, DeviceState, Reading, VitalReading
from gateway.supervisor import Assignment, BackoffPolicy, SessionState, Supervisor
from tests.supervisor_script import CONNECTS, SPEC, ScriptSettings


def _supervisor(tmp_path: Path, got: list[tuple[str, Reading]]) -> Supervisor:
    async def sink(patient: str, reading: Reading) -> None:
        got.append((patient, reading))

    def ctx(device_id: str, a: Assignment) -> DeviceContext:
        return DeviceContext(device_id, a.patient, ManualClock(), tmp_path)

    return Supervisor(
        specs={"script": SPEC},
        sink=sink,
        clock=ManualClock(),
        context_for=ctx,
        backoff=BackoffPolicy(initial_s=0.01, max_s=0.05, healthy_after_s=3600),
    )


def _a(device: str, behaviour: str, patient: str = "p") -> Assignment:
    return Assignment(patient, ScriptSettings(id=device, behaviour=behaviour))  # type: ignore[arg-type]


async def test_a_failing_device_is_retried_and_never_stops_the_others(tmp_path: Path) -> None:
    CONNECTS.clear()
    got: list[tuple[str, Reading]] = []
    sup = _supervisor(tmp_path, got)
    sup.apply({"flaky": _a("flaky", "flaky"), "buggy": _a("buggy", "buggy"), "ok": _a("ok", "steady")})
    await asyncio.sleep(0.5)
    assert CONNECTS["flaky"] >= 3 and CONNECTS["buggy"] >= 3
    assert CONNECTS["ok"] == 1
    info = {s.device_id: s for s in sup.sessions()}
    assert info["ok"].state is SessionState.RUNNING and info["ok"].failures == 0
    assert "cable pulled" in (info["flaky"].last_error or "")
    assert "ZeroDivisionError" in (info["buggy"].last_error or "")
    events = [r for _, r in got if isinstance(r, DeviceEvent) and r.device_id == "flaky"]
    assert [e.state for e in events[:4]] == [DeviceState.CONNECTED, DeviceState.DISCONNECTED] * 2
    ok_readings = [r for _, r in got if isinstance(r, VitalReading) and r.device_id == "ok"]
    assert len(ok_readings) > 50
    await sup.stop_all()


async def test_a_finished_source_is_not_restarted(tmp_path: Path) -> None:
    CONNECTS.clear()
    sup = _supervisor(tmp_path, [])
    sup.apply({"rec": _a("rec", "finite")})
    await asyncio.sleep(0.2)
    assert CONNECTS["rec"] == 1
    assert sup.sessions()[0].state is SessionState.FINISHED
    await sup.stop_all()


async def test_apply_restarts_only_what_changed(tmp_path: Path) -> None:
    CONNECTS.clear()
    sup = _supervisor(tmp_path, [])
    sup.apply({"a": _a("a", "steady"), "b": _a("b", "steady"), "c": _a("c", "steady")})
    await asyncio.sleep(0.05)
    report = sup.apply({"a": _a("a", "steady"), "b": _a("b", "steady", patient="other"), "d": _a("d", "steady")})
    await asyncio.sleep(0.05)
    assert (report.added, report.removed, report.restarted, report.unchanged) == (["d"], ["c"], ["b"], ["a"])
    assert CONNECTS == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert sorted(s.device_id for s in sup.sessions()) == ["a", "b", "d"]
    await sup.stop_all()
