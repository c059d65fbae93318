"""The billing ledger on the real SQLite outbox: records and state in one transaction, restarts, kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import pytest

from gateway.billing.ledger import BillingLedger, PatientBilling, state_key
from gateway.clock import ManualClock
from gateway.config.billing import BillingSection
from gateway.outbox import Outbox, OutboxFull
from gateway.records import BillingRecord, BillingStatus, ClockQuality
from tests import billing_replay_worker as worker
from tests.billing_helpers import CHICAGO, ts

ROOT = Path(__file__).resolve().parent.parent
S = ClockQuality.SYNCED
PATIENTS = {"p1": PatientBilling(CHICAGO, devices=frozenset({"ox1"}))}

ONE_DAY_SETUP = BillingSection(setup_min_days=1)  # a payer billing set-up at the first day of data


async def stored(db: Path) -> list[BillingRecord]:
    """Every billing record in the outbox file, in queue order (nothing is acknowledged here)."""
    box = await Outbox.open(db, gateway_id="gw-read")
    try:
        rows = await box.lease(100_000)
    finally:
        await box.close()
    return [BillingRecord.model_validate_json(r.payload) for r in rows if r.kind == "billing"]


async def test_records_and_state_share_commits_and_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    clock = ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    box = await Outbox.open(db, gateway_id="gw1", commit_interval_ms=10)
    ledger = await BillingLedger.open(box, BillingSection(), gateway_id="gw1", patients=PATIENTS, clock=clock)
    for _ in range(17):
        for _ in range(5):
            await ledger.on_reading("p1", "ox1", clock.now(), S)
            clock.advance(600)
        clock.advance(86400 - 3000)
    await ledger.flush()
    await box.close()
    first = await stored(db)
    assert [(r.code, r.status.value, r.version) for r in first] == [
        ("99453", "billable", 1),
        ("99445", "accruing", 1),
        ("99445", "not_billable", 2),
        ("99454", "eligible", 1),
    ]
    # Reopen: the state is there, and replaying the same days adds nothing.
    box = await Outbox.open(db, gateway_id="gw1", commit_interval_ms=10)
    state = await box.load_state("billing/")
    assert list(state) == [state_key("p1")]
    again = await BillingLedger.open(box, BillingSection(), gateway_id="gw1", patients=PATIENTS, clock=clock)
    view = again.summary()[0]
    assert (view.days_counted, view.projected_code, view.status) == (17, "99454", BillingStatus.ELIGIBLE)
    clock.t = ts("2026-03-01T09:00:00-06:00")
    for _ in range(17):
        await again.on_reading("p1", "ox1", clock.now(), S)
        clock.advance(86400)
    clock.t = ts("2026-04-01T00:00:00-05:00")
    await again.tick(clock.now())
    await again.flush()
    await box.close()
    records = await stored(db)
    assert [r.key for r in records] == [r.key for r in first] + ["rpm:p1:99454:2026-03-01:v2"]
    assert records[-1].status is BillingStatus.BILLABLE and records[-1].qualifying_days == 17
    # 5 readings in the first run and 1 replayed: counts are readings received, the days do not move
    assert records[-1].evidence[0].readings == 6


class RefusingStore:
    """Refuses the first ``refusals`` commits (outbox full), then takes everything."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.records: list[BillingRecord] = []
        self.states: list[str] = []

    def _fut(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refusals > 0:
            self.refusals -= 1
            fut.set_exception(OutboxFull("billing quota reached"))
        else:
            fut.set_result(None)
        return fut

    def submit(self, record: BillingRecord, *, state: Mapping[str, bytes | None] | None = None) -> asyncio.Future[None]:
        fut = self._fut()
        if fut.exception() is None:
            self.records.append(record)
            self.states += list(state or {})
        return fut

    def submit_state(self, state: Mapping[str, bytes | None]) -> asyncio.Future[None]:
        fut = self._fut()
        if fut.exception() is None:
            self.states += list(state)
        return fut

    async def load_state(self, prefix: str) -> dict[str, bytes]:
        return {}


async def test_a_refused_save_keeps_its_records_and_retries_them_on_tick() -> None:
    store = RefusingStore(refusals=1)
    clock = ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    # set-up after one day of data, so the first reading makes a record
    ledger = await BillingLedger.open(store, ONE_DAY_SETUP, gateway_id="gw1", patients=PATIENTS, clock=clock)
    await ledger.on_reading("p1", "ox1", clock.now(), S)  # the set-up record is refused
    assert store.records == []
    clock.advance(1)
    await ledger.on_reading("p1", "ox1", clock.now(), S)  # same day: no background save past the unsent record
    assert store.states == []
    await ledger.tick(clock.now())
    assert [r.key for r in store.records] == ["rpm:p1:99453:2026-03-01:v1"]
    assert store.states == [state_key("p1")]


async def run_worker(db: Path, kill_after_day: int | None) -> bool:
    """Run the replay child; with ``kill_after_day``, SIGKILL it once it reports that day."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.billing_replay_worker", str(db),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async for line in proc.stdout:
            if kill_after_day is not None and line.strip() == f"day {kill_after_day}".encode():
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        code = await proc.wait()
    if kill_after_day is None:
        assert code == 0
    return code == -signal.SIGKILL


@pytest.mark.slow
async def test_kill_9_during_a_long_replay_then_replay_again_gives_the_same_keys(tmp_path: Path) -> None:
    clean = tmp_path / "clean.sqlite3"
    await run_worker(clean, None)
    expected = await stored(clean)
    crashed = tmp_path / "crashed.sqlite3"
    rng = random.Random(20261127)
    kills = sorted(rng.sample(range(1, 44), 3))  # three crashes at random days, each followed by a replay
    for day in kills:
        assert await run_worker(crashed, day)
    await run_worker(crashed, None)
    got = await stored(crashed)
    assert {r.key for r in got} == {r.key for r in expected}
    # A key always names the same facts: code, status, period and the dates that count.
    final_clean = {r.key: (r.code, r.status, r.period_start, r.dates) for r in expected}
    assert {r.key: (r.code, r.status, r.period_start, r.dates) for r in got} == final_clean
    # and the billable supply records match an independent recomputation of the schedule's days
    days = worker.expected_days()
    supply = [r for r in expected if r.status is BillingStatus.BILLABLE and r.code != "99453"]
    for patient, dates in days.items():
        billed = sorted(d for r in supply if r.patient == patient for d in r.dates)
        in_periods = [d for d in dates if any(r.period_start <= d <= r.period_end for r in supply)]
        assert billed == in_periods
    assert sorted((r.patient, r.code, r.period_start, r.qualifying_days) for r in supply) == [
        ("p1", "99445", "2026-03-31", 13),
        ("p1", "99454", "2026-03-01", 26),
        ("p2", "99445", "2026-03-01", 10),
        ("p2", "99445", "2026-03-31", 5),
    ]
    assert date.fromisoformat(supply[0].period_end) > date.fromisoformat(supply[0].period_start)


CONFIG = """\
gateway:
  id: gw1
upstream:
  url: mqtt://127.0.0.1:1883
storage:
  path: state
billing:
  enrolment:
    p2: 2026-03-10
patients:
  - id: p1
    timezone: America/Chicago
    devices:
      - {id: ox1, driver: replay, vitals: a.jsonl}
  - id: p2
    devices:
      - {id: ox2, driver: replay, vitals: b.jsonl}
"""


async def test_billing_status_reads_the_outbox_while_it_is_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.billing.cli import main  # noqa: PLC0415

    (tmp_path / "gw.yaml").write_text(CONFIG)
    (tmp_path / "state").mkdir()
    assert main(["-c", str(tmp_path / "gw.yaml")]) == 1  # no outbox yet
    assert "no outbox database" in capsys.readouterr().err
    clock = ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    box = await Outbox.open(tmp_path / "state" / "outbox.sqlite3", gateway_id="gw1", commit_interval_ms=10)
    ledger = await BillingLedger.open(box, BillingSection(), gateway_id="gw1", patients=PATIENTS, clock=clock)
    for _ in range(3):
        await ledger.on_reading("p1", "ox1", clock.now(), S)
        clock.advance(86400)
    code = await asyncio.to_thread(main, ["-c", str(tmp_path / "gw.yaml")])  # the daemon's outbox stays open
    out = capsys.readouterr().out
    assert code == 0
    assert "p1  (days cut in America/Chicago)" in out
    assert "period 2026-03-01 .. 2026-03-30: 3 day(s) of data, last 2026-03-03" in out
    assert "will bill: 99445 if the period closed now (accruing sent upstream)" in out
    assert "p2  (days cut in" in out and "no open period" in out
    assert await asyncio.to_thread(main, ["-c", str(tmp_path / "gw.yaml"), "--json"]) == 0
    views = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(v["patient"], v["days_counted"], v["projected_code"]) for v in views] == [
        ("p1", 3, "99445"),
        ("p2", 0, None),
    ]
    await box.close()


class ControlledStore:
    """Commits only when the test says so, to interleave saves."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, bool]] = []  # (record key or None for a bare state, with state)
        self.pending: list[asyncio.Future[None]] = []

    def _fut(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        return fut

    def submit(self, record: BillingRecord, *, state: Mapping[str, bytes | None] | None = None) -> asyncio.Future[None]:
        self.calls.append((record.key, state is not None))
        return self._fut()

    def submit_state(self, state: Mapping[str, bytes | None]) -> asyncio.Future[None]:
        self.calls.append((None, True))
        return self._fut()

    async def load_state(self, prefix: str) -> dict[str, bytes]:
        return {}


async def test_a_later_state_never_overtakes_a_record_still_being_committed() -> None:
    store = ControlledStore()
    clock = ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    ledger = await BillingLedger.open(store, ONE_DAY_SETUP, gateway_id="gw1", patients=PATIENTS, clock=clock)
    first = asyncio.create_task(ledger.on_reading("p1", "ox1", clock.now(), S))  # set-up record
    await asyncio.sleep(0)
    assert store.calls == [("rpm:p1:99453:2026-03-01:v1", True)]
    clock.advance(60)
    await ledger.on_reading("p1", "ox1", clock.now(), S)  # same day, save interval passed: held back
    clock.advance(86400)
    second = asyncio.create_task(ledger.on_reading("p1", "ox1", clock.now(), S))  # day 2: waits its turn
    await asyncio.sleep(0)
    assert len(store.calls) == 1
    store.pending[0].set_exception(OutboxFull("quota"))
    await first
    await asyncio.sleep(0)
    # the refused set-up goes again, before day 2's record, and only the last carries the state
    assert store.calls[1:] == [("rpm:p1:99453:2026-03-01:v1", False), ("rpm:p1:99445:2026-03-01:v1", True)]
    for fut in store.pending[1:]:
        fut.set_result(None)
    await second
