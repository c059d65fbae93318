"""The daemon under faults: a reload that changes some devices, a corrupt database, a full disk,
a broken config — each against the real daemon process."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.outbox import Outbox
from gateway.records import RecordKind
from tests.broker import MosquittoBroker, Subscriber
from tests.daemon_harness import FIXTURES, DaemonProcess, events_named, replay_device, write_config

VITALS_A = FIXTURES / "vitals" / "patient-a.jsonl"
VITALS_B = FIXTURES / "vitals" / "patient-b.jsonl"


async def _log_event(d: DaemonProcess, name: str, within_s: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        found = events_named(d.log_events(), name)
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no {name} in the log:\n{d.log_tail()}"
        await asyncio.sleep(0.1)


async def test_sighup_restarts_only_changed_devices(tmp_path: Path, daemon_factory: Any) -> None:
    def devices(b_speed: float, with_c: bool, with_d: bool) -> dict[str, list[dict[str, Any]]]:
        p = [
            replay_device("dev-a", vitals=VITALS_A, speed=5, loop=True),
            replay_device("dev-b", vitals=VITALS_B, speed=b_speed, loop=True),
        ]
        if with_c:
            p.append(replay_device("dev-c", vitals=VITALS_A, speed=5, loop=True))
        if with_d:
            p.append(replay_device("dev-d", vitals=VITALS_B, speed=5, loop=True))
        return {"p-a": p}

    cfg = write_config(tmp_path, broker_url="mqtt://127.0.0.1:9", patients=devices(5, True, False))
    d = daemon_factory(cfg)
    d.start()
    await asyncio.sleep(1.0)
    write_config(tmp_path, broker_url="mqtt://127.0.0.1:9", patients=devices(7, False, True))
    d.signal(signal.SIGHUP)
    reloaded = await _log_event(d, "config_reloaded")
    assert reloaded["added"] == ["dev-d"]
    assert reloaded["removed"] == ["dev-c"]
    assert reloaded["restarted"] == ["dev-b"]
    assert reloaded["unchanged"] == 1
    await asyncio.sleep(1.0)
    connects = [e["device"] for e in events_named(d.log_events(), "device_connected")]
    assert connects.count("dev-a") == 1, "an unchanged device must keep its session"
    assert connects.count("dev-b") == 2 and connects.count("dev-d") == 1
    assert d.stop() == 0


async def test_sighup_with_a_broken_config_keeps_running(tmp_path: Path, daemon_factory: Any) -> None:
    cfg = write_config(
        tmp_path,
        broker_url="mqtt://127.0.0.1:9",
        patients={"p-a": [replay_device("dev-a", vitals=VITALS_A, speed=5, loop=True)]},
    )
    d = daemon_factory(cfg)
    d.start()
    good = cfg.read_text()
    cfg.write_text(good.replace("patients:", "patients:\n  - oops: [unclosed"))
    d.signal(signal.SIGHUP)
    failed = await _log_event(d, "config_reload_failed")
    assert "line" in failed["problems"] and "Traceback" not in failed["problems"]
    assert d.proc is not None and d.proc.poll() is None
    assert d.stop() == 0


async def test_corrupt_database_is_moved_aside_and_alarmed(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber, daemon_factory: Any
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "outbox.sqlite3").write_bytes(b"this is not a database, it is what a bad SD card left" * 100)
    cfg = write_config(
        tmp_path,
        broker_url=broker.url,
        patients={"p-a": [replay_device("dev-a", vitals=VITALS_A, speed=20)]},
    )
    d = daemon_factory(cfg)
    d.start()
    await subscriber.wait_until(
        lambda rs: any(r.json().get("condition") == "outbox_corrupt" for r in rs if "/alarm/" in r.topic)
    )
    alarm = next(r.json() for r in subscriber.records() if "/alarm/" in r.topic)
    assert alarm["technical"] is True and alarm["patient"] == "_gateway" and alarm["event"] == "raised"
    assert list(state.glob("outbox.sqlite3.corrupt-*")), "the damaged file is kept for inspection"
    assert d.stop() == 0


async def test_below_the_disk_floor_drops_summaries_keeps_billing_and_stays_up(
    tmp_path: Path, daemon_factory: Any
) -> None:
    # A free-disk floor far above what any disk has: the outbox behaves as on a nearly full SD
    # card, where summaries and status make room and alarms and billing are still stored.
    cfg = write_config(
        tmp_path,
        broker_url="mqtt://127.0.0.1:9",
        patients={"p-a": [replay_device("dev-a", vitals=VITALS_A, speed=50, loop=True)]},
        extra={"storage": {"min_free_mb": 1_000_000_000}, "processing": {"summaries": {"period_s": 1}}},
    )
    d = daemon_factory(cfg)
    d.start()
    await _log_event(d, "gateway_technical_alarm")
    await asyncio.sleep(2.0)
    assert d.proc is not None and d.proc.poll() is None, "the daemon must stay up"
    assert d.stop() == 0
    stats = Outbox.inspect(tmp_path / "state" / "outbox.sqlite3")
    assert stats.classes[RecordKind.SUMMARY].dropped > 0, stats
    assert stats.refused == 0, "alarms and billing are stored while the disk has room"
    assert stats.classes[RecordKind.BILLING].dropped == 0
    assert stats.classes[RecordKind.ALARM].dropped == 0
    alarms = [e for e in events_named(d.log_events(), "gateway_technical_alarm") if e["condition"] == "outbox_full"]
    assert alarms, d.log_tail()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gateway:\n  id: gw\nupstream:\n  url: http://broker\npatients: []\n", "upstream.url"),
        ("gateway:\n  id: gw\n   bad indent: 1\n", "YAML"),
        (
            "gateway: {id: gw}\nupstream: {url: 'mqtts://b'}\npatients:\n  - id: p\n    devices:\n"
            "      - {id: d, driver: nonexistent}\n",
            "driver",
        ),
    ],
)
def test_run_with_a_broken_config_exits_2_without_traceback(tmp_path: Path, text: str, expected: str) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(text)
    d = DaemonProcess(cfg, tmp_path)
    d.start(wait_ready=False)
    try:
        assert d.proc is not None
        assert d.proc.wait(timeout=30) == 2
        out = d.log_path.read_text()
        assert "broken.yaml" in out and expected in out and "Traceback" not in out
    finally:
        d.close()


async def test_unreadable_billing_state_keeps_monitoring_without_billing(tmp_path: Path, daemon_factory: Any) -> None:
    state = tmp_path / "state"
    state.mkdir()
    outbox = await Outbox.open(state / "outbox.sqlite3", gateway_id="gw-test")
    await outbox.submit_state({"billing/p-a/book": b"\x00not json at all"})
    await outbox.close()
    cfg = write_config(
        tmp_path,
        broker_url="mqtt://127.0.0.1:9",
        patients={"p-a": [replay_device("dev-a", vitals=VITALS_A, speed=50)]},
    )
    d = daemon_factory(cfg)
    d.start()
    alarm = await _log_event(d, "gateway_technical_alarm")
    assert alarm["condition"] == "billing_state_unreadable"
    await asyncio.sleep(1.0)
    assert d.stop() == 0
    stats = Outbox.inspect(state / "outbox.sqlite3")
    assert stats.classes[RecordKind.SUMMARY].pending + stats.classes[RecordKind.ALARM].pending > 0
    assert stats.classes[RecordKind.BILLING].pending == 0
