"""Billing end to end: 45 accelerated days of two patients → the real daemon → a real Mosquitto.

The replay dates readings from 20 days ago to 25 days ahead (``max_future_s`` widened for the test),
so the host clock never closes a period by itself: every closing here is driven by the data, exactly
as on a gateway whose clock is right.  Expectations come from an independent recomputation of the
schedule's local days, not from the ledger.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from gateway.config.billing import BillingSection
from gateway.outbox import Outbox
from tests.broker import MosquittoBroker, Subscriber
from tests.daemon_harness import DaemonProcess, replay_device, write_config

DAYS = 45
ZONES = {"p1": ZoneInfo("America/Chicago"), "p2": ZoneInfo("Europe/Berlin")}


def schedule(start: date) -> dict[str, list[tuple[float, str, str, float]]]:
    """Per patient (unix time, device, vital, value): p1 every 30 min of its daytime, one day a week off;
    p2 weighs itself every third morning."""
    out: dict[str, list[tuple[float, str, str, float]]] = {"p1": [], "p2": []}
    for k in range(DAYS):
        d = start + timedelta(days=k)
        if k % 7 != 6:
            for half in range(18):  # 09:00 .. 17:30 in Chicago
                t = datetime(d.year, d.month, d.day, 9, tzinfo=ZONES["p1"]).timestamp() + half * 1800
                out["p1"].append((t, "hr1", "heart_rate", 70.0 + half % 5))
        if k % 3 == 0:
            for m in (0, 2):
                t = datetime(d.year, d.month, d.day, 8, m, tzinfo=ZONES["p2"]).timestamp()
                out["p2"].append((t, "scale2", "body_weight", 81.5))
    return out


def expected_keys(sched: dict[str, list[tuple[float, str, str, float]]]) -> set[str]:
    """Naive recomputation: periods from the first local day of data; only periods followed by later
    data close (the host clock is behind them all)."""
    keys: set[str] = set()
    for patient, rows in sched.items():
        dates = sorted({datetime.fromtimestamp(t, ZONES[patient]).date() for t, *_ in rows})
        periods: list[tuple[date, list[date]]] = []
        for d in dates:
            if not periods or d > periods[-1][0] + timedelta(days=29):
                periods.append((d, []))
            periods[-1][1].append(d)
        if len(dates) >= BillingSection().setup_min_days:
            keys.add(f"rpm:{patient}:99453:{dates[0]}:v1")
        for i, (start, days) in enumerate(periods):
            closed = i < len(periods) - 1
            n = len(days)
            if n >= 2:
                keys.add(f"rpm:{patient}:99445:{start}:v1")
            if n >= 16:
                keys |= {f"rpm:{patient}:99445:{start}:v2", f"rpm:{patient}:99454:{start}:v1"}
            if closed and n >= 16:
                keys.add(f"rpm:{patient}:99454:{start}:v2")
            elif closed and n >= 2:
                keys.add(f"rpm:{patient}:99445:{start}:v2")
    return keys


def make_config(tmp_path: Path, broker_url: str, start: date, speed: float) -> Path:
    sched = schedule(start)
    t0 = datetime(start.year, start.month, start.day, tzinfo=UTC)
    devices: dict[str, list[dict[str, Any]]] = {}
    for patient, rows in sched.items():
        log = tmp_path / f"{patient}.jsonl"
        log.write_text(
            "".join(json.dumps({"t": t - t0.timestamp(), "vital": v, "value": x}) + "\n" for t, _, v, x in rows)
        )
        devices[patient] = [replay_device(rows[0][1], vitals=log, speed=speed, start_time=t0.isoformat())]
    cfg = write_config(
        tmp_path,
        broker_url=broker_url,
        patients=devices,
        extra={"billing": {"max_future_s": 40 * 86400}, "processing": {"summaries": {"period_s": 3600}}},
    )
    data = yaml.safe_load(cfg.read_text())
    for p in data["patients"]:
        p["timezone"] = ZONES[p["id"]].key
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg


def billing_keys(sub: Subscriber) -> set[str]:
    return {r.user_properties["key"] for r in sub.records() if "/billing/" in r.topic}


def depth(db: Path) -> int:
    return Outbox.inspect(db).depth if db.exists() else 1


async def wait_drained(db: Path, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while depth(db) > 0:
        assert time.monotonic() < deadline, "outbox not drained"
        await asyncio.sleep(0.2)


@pytest.fixture
def start_date() -> date:
    return datetime.now(UTC).date() - timedelta(days=20)


async def run_to_end(tmp_path: Path, cfg: Path, sub: Subscriber, want: set[str]) -> None:
    d = DaemonProcess(cfg, tmp_path)
    try:
        d.start()
        await sub.wait_until(lambda _: billing_keys(sub) >= want, within_s=90)
        await wait_drained(tmp_path / "state" / "outbox.sqlite3")
        assert d.stop() == 0
    finally:
        d.close()


async def test_45_days_two_patients_through_the_broker(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber, start_date: date
) -> None:
    cfg = make_config(tmp_path, broker.url, start_date, speed=0)
    want = expected_keys(schedule(start_date))
    await run_to_end(tmp_path, cfg, subscriber, want)
    assert billing_keys(subscriber) == want
    bodies = {r.user_properties["key"]: r.json() for r in subscriber.records() if "/billing/" in r.topic}
    p1_supply = [b for b in bodies.values() if b["patient"] == "p1" and b["code"] == "99454"]
    final = max(p1_supply, key=lambda b: b["version"])
    assert final["status"] == "billable" and final["qualifying_days"] == 26 and final["devices"] == ["hr1"]
    assert final["timezone"] == "America/Chicago"
    assert all(e["readings"] == 18 for e in final["evidence"])
    p2_first = [
        b for b in bodies.values() if b["patient"] == "p2" and b["status"] == "billable" and b["code"] == "99445"
    ]
    assert [b["qualifying_days"] for b in p2_first] == [10]
    for r in subscriber.records():
        if "/billing/" in r.topic:
            assert r.topic == f"t/gw-test/billing/{r.json()['patient']}"


@pytest.mark.slow
async def test_kill_9_during_the_replay_then_replay_again_gives_the_same_billing_keys(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber, start_date: date
) -> None:
    want = expected_keys(schedule(start_date))
    # 45 days in about 6 s: slow enough to be killed in the middle
    cfg = make_config(tmp_path, broker.url, start_date, speed=DAYS * 86400 / 6)
    for delay in (1.5, 3.0):
        d = DaemonProcess(cfg, tmp_path)
        try:
            d.start()
            await asyncio.sleep(delay)
            d.kill9()
        finally:
            d.close()
    assert billing_keys(subscriber) < want  # the crashes happened before the end
    await run_to_end(tmp_path, cfg, subscriber, want)
    assert billing_keys(subscriber) == want
    # a key re-sent after a crash carries the same facts
    seen: dict[str, tuple[Any, ...]] = {}
    for r in subscriber.records():
        if "/billing/" in r.topic:
            b = r.json()
            facts = (b["code"], b["status"], b["period_start"], b["dates"])
            assert seen.setdefault(b["key"], facts) == facts
