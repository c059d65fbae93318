"""The supervisor: retries with backoff, isolation between devices, reload by difference.

Everything runs on one ManualClock shared by the supervisor and the scripted devices: backoff
waits and streaming advance only when the test moves the clock, so timing is exact and no test
waits on the wall clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.config.loader import parse_config_text
from gateway.daemon import Daemon
from gateway.driver_api import DeviceContext
from gateway.records import DeviceEvent, DeviceState, Reading, VitalReading
from gateway.supervisor import Assignment, BackoffPolicy, SessionState, Supervisor
from tests.supervisor_script import CONNECT_TIMES, CONNECTS, SPEC, ScriptSettings

FAST = BackoffPolicy(initial_s=0.01, max_s=0.05, healthy_after_s=3600)


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    CONNECTS.clear()
    CONNECT_TIMES.clear()


def _supervisor(tmp_path: Path, got: list[tuple[str, Reading]], clock: ManualClock,
                backoff: BackoffPolicy = FAST) -> Supervisor:
    async def sink(patient: str, reading: Reading) -> None:
        got.append((patient, reading))

    def ctx(device_id: str, a: Assignment) -> DeviceContext:
        return DeviceContext(device_id, a.patient, clock, tmp_path)

    return Supervisor(specs={"script": SPEC}, sink=sink, clock=clock, context_for=ctx, backoff=backoff)


def _a(device: str, behaviour: str, patient: str = "p", **kw: float) -> Assignment:
    return Assignment(patient, ScriptSettings(id=device, behaviour=behaviour, **kw))  # type: ignore[arg-type]


async def test_a_failing_device_is_retried_and_never_stops_the_others(tmp_path: Path) -> None:
    got: list[tuple[str, Reading]] = []
    clock = ManualClock()
    sup = _supervisor(tmp_path, got, clock)
    sup.apply({"flaky": _a("flaky", "flaky"), "buggy": _a("buggy", "buggy"), "ok": _a("ok", "steady")})
    await clock.run_for(0.5, step=0.001)
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
    clock = ManualClock()
    sup = _supervisor(tmp_path, [], clock)
    sup.apply({"rec": _a("rec", "finite")})
    await clock.run_for(0.2, step=0.001)
    assert CONNECTS["rec"] == 1
    assert sup.sessions()[0].state is SessionState.FINISHED
    await sup.stop_all()


async def test_apply_restarts_only_what_changed(tmp_path: Path) -> None:
    clock = ManualClock()
    sup = _supervisor(tmp_path, [], clock)
    sup.apply({"a": _a("a", "steady"), "b": _a("b", "steady"), "c": _a("c", "steady")})
    await clock.run_for(0.05, step=0.001)
    report = sup.apply({"a": _a("a", "steady"), "b": _a("b", "steady", patient="other"), "d": _a("d", "steady")})
    await clock.run_for(0.05, step=0.001)
    assert (report.added, report.removed, report.restarted, report.unchanged) == (["d"], ["c"], ["b"], ["a"])
    assert CONNECTS == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert sorted(s.device_id for s in sup.sessions()) == ["a", "b", "d"]
    await sup.stop_all()


async def test_backoff_doubles_with_jitter_up_to_the_cap(tmp_path: Path) -> None:
    """Retry n waits initial * 2**n plus up to initial of jitter, never more than max."""
    clock = ManualClock()
    sup = _supervisor(tmp_path, [], clock, BackoffPolicy(initial_s=1.0, max_s=8.0, healthy_after_s=60))
    sup.apply({"gone": _a("gone", "refused")})
    await clock.run_for(40.0, step=0.05)
    gaps = [b - a for a, b in zip(CONNECT_TIMES["gone"], CONNECT_TIMES["gone"][1:], strict=False)]
    assert len(gaps) >= 5
    for n, gap in enumerate(gaps):
        low = min(2.0**n, 8.0)
        assert low - 0.051 <= gap <= min(low + 1.0, 8.0) + 0.051, (n, gaps)
    assert sup.sessions()[0].state is SessionState.BACKOFF
    await sup.stop_all()


async def test_a_session_that_ran_healthily_starts_over_with_a_short_backoff(tmp_path: Path) -> None:
    """A strap that drops after an hour reconnects in half the initial backoff; one that keeps
    dropping within seconds backs off further each time."""
    clock = ManualClock()
    policy = BackoffPolicy(initial_s=1.0, max_s=60.0, healthy_after_s=10.0)
    sup = _supervisor(tmp_path, [], clock, policy)
    sup.apply({"long": _a("long", "drops", drop_after_s=12.0), "short": _a("short", "drops", drop_after_s=2.0)})
    await clock.run_for(45.0, step=0.01)
    long_gaps = [b - a for a, b in zip(CONNECT_TIMES["long"], CONNECT_TIMES["long"][1:], strict=False)]
    assert len(long_gaps) >= 3
    assert all(abs(g - 12.5) < 0.05 for g in long_gaps), long_gaps  # 12 s up, then 0.5 s apart
    short_gaps = [b - a for a, b in zip(CONNECT_TIMES["short"], CONNECT_TIMES["short"][1:], strict=False)]
    waits = [g - 2.0 for g in short_gaps]  # minus the 2 s it ran each time
    assert len(waits) >= 3
    assert all(min(2.0**n, 60.0) - 0.05 <= w <= 2.0**n + 1.05 for n, w in enumerate(waits)), waits
    await sup.stop_all()


async def test_a_session_stopped_by_a_non_retryable_error_is_named_in_status(tmp_path: Path) -> None:
    clock = ManualClock()
    sup = _supervisor(tmp_path, [], clock)
    sup.apply({"odd": _a("odd", "fatal"), "ok": _a("ok", "steady")})
    await clock.run_for(0.05, step=0.001)
    failures = sup.task_failures()
    assert list(failures) == ["odd"] and "another protocol" in str(failures["odd"])
    cfg = parse_config_text(
        "gateway: {id: gw}\nupstream: {url: 'mqtt://127.0.0.1:1883'}\nstorage: {path: state}\n"
        "patients: [{id: p, devices: [{id: r, driver: replay, vitals: x.jsonl}]}]\n",
        file=tmp_path / "gateway.yaml",
    )
    daemon = Daemon(tmp_path / "gateway.yaml", cfg, clock=clock)
    daemon.supervisor = sup
    assert daemon.status_line().endswith(", stopped on an error: odd")
    await sup.stop_all()
