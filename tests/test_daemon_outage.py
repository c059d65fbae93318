"""A broker outage in the running daemon: a warning naming the cause, then a recovery line, both at
syslog priority 4 so ``journalctl -u iomt-gateway -p warning`` shows them.

The daemon's threshold is ``upstream.outage_warning_s`` (default 60 s); here 3 s, so the test waits
seconds, not a minute.  The schedule itself (60 s, then 2, 4, 8 ... minutes) is tested on a manual clock
in test_uplink_outage.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway import daemon as daemon_module
from gateway.config.loader import load_config
from gateway.daemon import Daemon
from gateway.outbox import OutboxFull
from gateway.records import AlarmEvent, AlarmRecord, ClockQuality, Severity, Vital
from gateway.uplink import UplinkStats
from tests.broker import MosquittoBroker, Subscriber
from tests.daemon_harness import FIXTURES, events_named, replay_device, write_config


async def _event(d: Any, name: str, within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = events_named(d.log_events(), name)
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {name} within {within_s} s:\n{d.log_tail()}")


async def test_broker_outage_warns_with_the_cause_and_logs_recovery(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber, daemon_factory: Any
) -> None:
    cfg = write_config(
        tmp_path,
        broker_url=broker.url,
        patients={"p-a": [replay_device("ox-a", vitals=FIXTURES / "vitals" / "patient-a.jsonl", speed=5)]},
        extra={"upstream": {"outage_warning_s": 3, "backoff_max_s": 1.0}},
    )
    d = daemon_factory(cfg)
    d.start()
    await subscriber.wait_until(lambda rs: any(r.topic.endswith("/status") for r in rs))
    assert events_named(d.log_events(), "uplink_unreachable") == []
    broker.stop()
    stopped = time.monotonic()
    warning = await _event(d, "uplink_unreachable", within_s=30)
    warned_after = time.monotonic() - stopped
    assert warning["level"] == "warning"
    assert warning["cause"] == "refused", warning
    assert warning["port"] == broker.port and warning["down_s"] >= 3
    assert "is the broker running" in warning["hint"]
    broker.start()
    recovered = await _event(d, "uplink_recovered", within_s=30)
    assert recovered["level"] == "warning" and recovered["last_cause"] == "refused"
    assert recovered["down_s"] >= warning["down_s"]
    assert d.stop() == 0
    # What journalctl -p warning filters on: the <4> syslog prefix of those two lines.
    raw = d.log_path.read_text().splitlines()
    for name in ("uplink_unreachable", "uplink_recovered"):
        line = next(x for x in raw if f'"event": "{name}"' in x)
        assert line.startswith("<4>"), line
    print(f"warning {warned_after:.1f} s after the broker stopped (threshold 3 s)")


class _Offline:
    """An uplink that never connects: what the outbox holds stays there for the test to take."""

    def __init__(self, *_args: Any, **_kw: Any) -> None:
        self.stats = UplinkStats()

    async def run(self) -> None:
        await asyncio.Event().wait()


async def test_alarms_the_full_outbox_refused_are_kept_and_stored_once_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long outage fills the alarm quota: the outbox refuses new alarms (never drops stored ones),
    and the daemon keeps each refused alarm and submits it again on the next tick until it is taken.
    The old daemon logged record_refused and let it go."""
    monkeypatch.setattr(daemon_module, "Uplink", _Offline)
    path = write_config(
        tmp_path,
        broker_url="mqtt://127.0.0.1:9",
        patients={"p-a": [replay_device("idle", vitals=FIXTURES / "vitals" / "patient-a.jsonl")]},
        extra={"storage": {"quotas": {"alarm": 100}}},
    )
    d = Daemon(path, load_config(path))
    run = asyncio.create_task(d.run())
    try:
        async with asyncio.timeout(60):
            while d.pipeline is None or d.outbox is None:  # noqa: ASYNC110 - waits for the daemon's start-up
                await asyncio.sleep(0.02)
            box = d.outbox
            made = [
                AlarmRecord(key=box.next_key(), gateway_id="gw-test", patient="p-a", time=datetime.now(UTC),
                            clock=ClockQuality.SYNCED, alarm_id=f"a{i}", event=AlarmEvent.RAISED,
                            condition="spo2_low", technical=False, severity=Severity.HIGH, vital=Vital.SPO2,
                            value=85.0, threshold=88.0)
                for i in range(150)
            ]  # fmt: skip
            with capture_logs() as logs:
                first = await asyncio.gather(*d._submit_all(list(made)), return_exceptions=True)
                assert sum(isinstance(r, OutboxFull) for r in first) >= 50  # the quota refused them
                stored: list[str] = []
                # the broker is back: delivery frees room (a refused record counted as lost ends the wait)
                while not {r.key for r in made} <= set(stored) and d.refused == 0:
                    rows = await box.lease(40)
                    stored += [r.key for r in rows]
                    await box.ack([r.id for r in rows])
                    await asyncio.sleep(0.05)
            assert d.refused == 0 and not [e for e in logs if e["event"] == "record_refused"]
            mine = [k for k in stored if k in {r.key for r in made}]
            assert sorted(mine) == sorted(r.key for r in made)  # each exactly once
            assert len([e for e in logs if e["event"] == "record_held"]) >= 50
    finally:
        d.request_stop()
        await asyncio.wait({run}, timeout=20)
