"""The status file's bookkeeping and view, without a daemon: which alarms are active, what survives a
restart, what a technician reads."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from gateway import status_file
from gateway.records import AlarmEvent, AlarmRecord, ClockQuality, Severity, Vital

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _alarm(alarm_id: str, event: AlarmEvent, value: float = 85.0) -> AlarmRecord:
    return AlarmRecord(
        key=f"gw:{alarm_id}:{event.value}",
        gateway_id="gw",
        patient="p-a",
        time=T,
        clock=ClockQuality.SYNCED,
        alarm_id=alarm_id,
        event=event,
        condition="spo2_low",
        technical=False,
        severity=Severity.HIGH,
        vital=Vital.SPO2,
        value=value,
        threshold=90.0,
        device="ox-a",
    )


def test_raise_adds_clear_removes_and_changes_are_flagged() -> None:
    alarms = status_file.ActiveAlarms()
    alarms.note(_alarm("a1", AlarmEvent.RAISED))
    assert alarms.changed and [a["alarm_id"] for a in alarms.rows()] == ["a1"]
    alarms.changed = False
    alarms.note(_alarm("zz", AlarmEvent.CLEARED))  # a clear for an alarm not shown: nothing changes
    assert not alarms.changed
    alarms.note(_alarm("a1", AlarmEvent.CLEARED))
    assert alarms.changed and alarms.rows() == []


def test_alarms_raised_before_a_restart_stay_until_their_clear(tmp_path: Path) -> None:
    before = status_file.ActiveAlarms()
    before.note(_alarm("a1", AlarmEvent.RAISED))
    doc = status_file.build(
        gateway_id="gw", now=T.timestamp(), mono_now=0.0, started_at=T.timestamp(), sessions=[],
        alarms=before, uplink=None, outbox=None,
    )  # fmt: skip
    path = status_file.status_path(tmp_path)
    status_file.write(path, doc)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary file left behind
    after = status_file.ActiveAlarms()
    after.carry_over(status_file.read(path))
    assert [a["alarm_id"] for a in after.rows()] == ["a1"]
    after.note(_alarm("a1", AlarmEvent.CLEARED))
    assert after.rows() == []


def test_the_view_names_value_limit_and_age() -> None:
    alarms = status_file.ActiveAlarms()
    alarms.note(_alarm("a1", AlarmEvent.RAISED, value=84.62))
    doc = status_file.build(
        gateway_id="gw", now=T.timestamp(), mono_now=0.0, started_at=T.timestamp() - 7200, sessions=[],
        alarms=alarms, uplink=None, outbox=None,
    )  # fmt: skip
    text = status_file.format_status(doc, T.timestamp() + 300)
    assert text.splitlines() == [
        f"gateway gw: up 2.1 h, status written 5 min ago (pid {os.getpid()})",
        "devices: 0/0 running",
        "alarms: 1 active",
        "  p-a: spo2 low value 84.62 (limit 90) [high] for 5 min (since 2026-03-01T12:00:00+00:00, device ox-a)",
    ]
