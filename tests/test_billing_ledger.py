"""The async ledger: when state is saved, the unsynced-clock hold, and restarts — against an in-memory store.

The same scenarios run on the real SQLite outbox in ``test_billing_outbox.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import date

import pytest

from gateway.billing.book import StateFormatError
from gateway.billing.ledger import BillingLedger, PatientBilling, state_key
from gateway.clock import ManualClock
from gateway.config.billing import BillingSection
from gateway.records import BillingRecord, ClockQuality
from tests.billing_helpers import CHICAGO, brief, local_noon, ts

S = ClockQuality.SYNCED
PATIENTS = {"p1": PatientBilling(CHICAGO, devices=frozenset({"ox1", "cuff1"}))}


class MemoryStore:
    """Commits at once; remembers each commit as (records, state keys) to check what went together."""

    def __init__(self) -> None:
        self.records: list[BillingRecord] = []
        self.state: dict[str, bytes] = {}
        self.commits: list[tuple[list[str], list[str]]] = []

    def _done(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def submit(self, record: BillingRecord, *, state: Mapping[str, bytes | None] | None = None) -> asyncio.Future[None]:
        if record.key not in {r.key for r in self.records}:
            self.records.append(record)
        self._apply(state or {})
        self.commits.append(([record.key], sorted(state or {})))
        return self._done()

    def submit_state(self, state: Mapping[str, bytes | None]) -> asyncio.Future[None]:
        self._apply(state)
        self.commits.append(([], sorted(state)))
        return self._done()

    def _apply(self, state: Mapping[str, bytes | None]) -> None:
        for k, v in state.items():
            if v is None:
                self.state.pop(k, None)
            else:
                self.state[k] = v

    async def load_state(self, prefix: str) -> dict[str, bytes]:
        return {k: v for k, v in self.state.items() if k.startswith(prefix)}


async def open_ledger(store: MemoryStore, clock: ManualClock, cfg: BillingSection | None = None) -> BillingLedger:
    return await BillingLedger.open(store, cfg or BillingSection(), gateway_id="gw1", patients=PATIENTS, clock=clock)


async def test_first_reading_of_a_day_is_saved_with_its_record_later_ones_are_throttled() -> None:
    store, clock = MemoryStore(), ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    ledger = await open_ledger(store, clock)
    await ledger.on_reading("p1", "ox1", clock.now(), S)
    assert store.commits == [([], [state_key("p1")])]  # a new day of data: saved at once, no record yet
    for _ in range(10):  # same day, within the save interval: memory only
        clock.advance(0.1)
        await ledger.on_reading("p1", "ox1", clock.now(), S)
    assert len(store.commits) == 1
    clock.advance(10)
    await ledger.on_reading("p1", "cuff1", clock.now(), S)  # interval passed: a state-only save
    await asyncio.sleep(0)
    assert store.commits[-1] == ([], [state_key("p1")])
    clock.advance(86400)
    await ledger.on_reading("p1", "ox1", clock.now(), S)  # day 2: a record and the state together
    assert store.commits[-1] == (["rpm:p1:99445:2026-03-01:v1"], [state_key("p1")])
    view = ledger.summary()[0]
    assert (view.period_start, view.days_counted, view.projected_code, view.status) == (
        "2026-03-01",
        2,
        "99445",
        "accruing",
    )


async def test_counters_survive_flush_and_restart() -> None:
    store, clock = MemoryStore(), ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    ledger = await open_ledger(store, clock)
    for _ in range(5):
        await ledger.on_reading("p1", "ox1", clock.now(), S)
        clock.advance(1)
    await ledger.flush()
    again = await open_ledger(store, clock)
    book = again._books["p1"]
    assert book.current is not None and book.current.days[date(2026, 3, 1)].readings == 5


async def test_a_clock_starting_in_1970_is_held_then_dated_by_the_monotonic_clock() -> None:
    # Boot without RTC: wall clock at 1970 + uptime, monotonic from 0, not synchronised.
    clock = ManualClock(t=120.0, mono=120.0, synced=False)
    store = MemoryStore()
    # a payer whose set-up needs one day of data: the record shows how the held readings were dated
    ledger = await open_ledger(store, clock, BillingSection(setup_min_days=1))
    for _ in range(3):  # three readings a minute apart, stamped in 1970
        await ledger.on_reading("p1", "ox1", clock.now(), ClockQuality.UNSYNCED)
        clock.advance(60)
    await ledger.tick(clock.now())
    assert store.records == [] and store.state == {}  # nothing counted on 1970
    assert ledger.summary()[0].held_readings == 3
    # NTP answers: the wall clock jumps to 23:30 local on 2 March; the monotonic clock goes on.
    clock.t = ts("2026-03-02T23:30:00-06:00")
    clock.mono += 5
    clock.synced = True
    await ledger.tick(clock.now())
    assert brief(store.records) == [("99453", "billable", 1, "2026-03-02")]
    ev = store.records[0].evidence[0]
    assert ev.date == "2026-03-02" and ev.clock_flags == [ClockQuality.CORRECTED]
    book = ledger._books["p1"]
    assert book.current is not None and book.current.days[date(2026, 3, 2)].readings == 3
    # first reading was 185 s before the jump (3 minutes of readings + 5 s)
    assert ev.first.timestamp() == clock.now() - 185
    assert ledger.summary()[0].held_readings == 0


async def test_held_readings_straddling_midnight_are_dated_on_both_days() -> None:
    clock = ManualClock(t=1000.0, mono=1000.0, synced=False)
    store = MemoryStore()
    ledger = await open_ledger(store, clock)
    for _ in range(4):  # 00:00 - 4 min .. 00:00 + 2 min, once the clock is known
        await ledger.on_reading("p1", "ox1", clock.now(), ClockQuality.UNSYNCED)
        clock.advance(120)
    clock.t = ts("2026-03-03T00:04:00-06:00")
    clock.synced = True
    await ledger.on_reading("p1", "ox1", clock.now(), S)  # the first synced reading releases the hold first
    dates = ledger.summary()[0].dates
    assert dates == ["2026-03-02", "2026-03-03"]


async def test_implausible_future_and_unknown_readings_are_counted_not_billed() -> None:
    clock = ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    store = MemoryStore()
    ledger = await open_ledger(store, clock)
    await ledger.on_reading("p1", "ox1", 86400.0, ClockQuality.DEVICE)  # a device clock in 1970
    await ledger.on_reading("p1", "ox1", clock.now() + 86400 * 365, ClockQuality.DEVICE)  # one year ahead
    await ledger.on_reading("nobody", "ox1", clock.now(), S)
    assert store.records == []
    assert ledger.summary()[0].counters == {"implausible_time": 1, "future_time": 1}
    assert ledger.unknown_patient == 1


async def test_tick_closes_the_period_and_emits_the_supply_record_once() -> None:
    clock = ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    store = MemoryStore()
    ledger = await open_ledger(store, clock)
    for _ in range(3):
        await ledger.on_reading("p1", "ox1", clock.now(), S)
        clock.advance(86400)
    clock.t = ts("2026-03-31T00:59:00-05:00")  # period ended at midnight; the grace runs one hour
    await ledger.tick(clock.now())
    assert [r.status.value for r in store.records].count("billable") == 1  # the set-up only
    clock.advance(120)
    await ledger.tick(clock.now())
    await ledger.tick(clock.now())
    assert brief(store.records[-1:]) == [("99445", "billable", 2, "2026-03-01")]
    assert len(store.records) == 3
    again = await open_ledger(store, clock)
    await again.tick(clock.now())
    assert len(store.records) == 3


async def test_an_unsynced_host_clock_closes_nothing() -> None:
    clock = ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    store = MemoryStore()
    ledger = await open_ledger(store, clock)
    await ledger.on_reading("p1", "ox1", clock.now(), S)
    await ledger.on_reading("p1", "ox1", clock.now() + 86400, S)
    clock.synced = False
    await ledger.tick(ts("2026-06-01T00:00:00-05:00"))
    assert ledger.summary()[0].period_start == "2026-03-01"


async def test_reconfigure_adds_a_patient_with_its_saved_state_and_changes_devices() -> None:
    store, clock = MemoryStore(), ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    both = {**PATIENTS, "p2": PatientBilling(CHICAGO, devices=frozenset({"scale2"}))}
    earlier = await BillingLedger.open(store, BillingSection(), gateway_id="gw1", patients=both, clock=clock)
    await earlier.on_reading("p2", "scale2", clock.now(), S)  # a previous run knew p2
    ledger = await open_ledger(store, clock)  # this run started without p2
    await ledger.on_reading("p2", "scale2", clock.now(), S)
    assert ledger.unknown_patient == 1
    moved = {**both, "p1": PatientBilling(CHICAGO, devices=frozenset({"ox9"}))}
    await ledger.reconfigure(BillingSection(), moved)
    clock.advance(86400)
    await ledger.on_reading("p2", "scale2", clock.now(), S)
    await ledger.on_reading("p1", "ox1", clock.now(), S)  # no longer p1's device
    views = {v.patient: v for v in ledger.summary()}
    assert views["p2"].days_counted == 2 and views["p2"].projected_code == "99445"
    assert views["p1"].counters == {"unassigned_device": 1}
    assert store.records[-1].key == "rpm:p2:99445:2026-03-01:v1"


async def test_unreadable_saved_state_stops_billing_rather_than_starting_afresh() -> None:
    store, clock = MemoryStore(), ManualClock(t=ts("2026-03-01T09:00:00-06:00"))
    store.state[state_key("p1")] = b'{"format": 1, "truncated'
    with pytest.raises(StateFormatError, match="refusing to start billing"):
        await open_ledger(store, clock)
    ledger = await BillingLedger.open(store, BillingSection(), gateway_id="gw1", patients={}, clock=clock)
    await ledger.reconfigure(BillingSection(), PATIENTS)  # on reload: logged, the patient left out
    await ledger.on_reading("p1", "ox1", clock.now(), S)
    assert ledger.summary() == [] and ledger.unknown_patient == 1 and store.records == []


def test_unsynced_hold_joins_spans_per_device_and_stays_bounded() -> None:
    from gateway.billing.hold import UnsyncedHold  # noqa: PLC0415

    hold = UnsyncedHold(max_spans=3)
    for i in range(10):  # one device every 30 s for 5 minutes: a single span
        hold.add("p1", "ox1", 100.0 + 30 * i)
    hold.add("p1", "cuff1", 150.0)  # another device: its own span
    assert len(hold) == 2 and hold.held_readings() == 11
    hold.add("p1", "ox1", 100.0 + 3600)  # an hour later: a new span
    hold.add("p2", "ox2", 5000.0)  # over the bound: the oldest span goes, counted
    assert len(hold) == 3 and hold.dropped_readings == 10
    spans = hold.release(wall_now=1_800_000_000.0, mono_now=6000.0)
    assert [(s.patient, s.device, s.count, s.first) for s in spans] == [
        ("p1", "cuff1", 1, 1_800_000_000.0 - 5850),
        ("p1", "ox1", 1, 1_800_000_000.0 - 2300),
        ("p2", "ox2", 1, 1_800_000_000.0 - 1000),
    ]
    assert len(hold) == 0


class SlowStore(MemoryStore):
    """Record commits wait until released (a busy outbox); state-only saves apply at once."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[asyncio.Future[None], BillingRecord, Mapping[str, bytes | None] | None]] = []

    def submit(self, record: BillingRecord, *, state: Mapping[str, bytes | None] | None = None) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((fut, record, state))
        return fut

    def release(self) -> None:
        for fut, record, state in self.pending:
            if not fut.done():
                self.records.append(record)
                self._apply(state or {})
                fut.set_result(None)


async def test_a_state_saved_while_another_patients_records_commit_never_gets_ahead_of_its_own() -> None:
    """Held readings of two patients are released together and saved one patient after the other;
    a same-day reading of the second, meanwhile, saves its state in the background.  That state
    must not say the set-up was sent before its record is in the outbox: after a crash there, the
    set-up would never be emitted."""
    store = SlowStore()
    t0 = local_noon(date(2026, 3, 2))
    clock = ManualClock(t=t0, synced=False)
    patients = {"p1": PatientBilling(CHICAGO), "p2": PatientBilling(CHICAGO)}
    ledger = await BillingLedger.open(store, BillingSection(), gateway_id="gw", patients=patients, clock=clock)
    for p in patients:  # one day of data each (Mar 1), on disk
        ledger._books[p].observe(f"dev-{p}", local_noon(date(2026, 3, 1)), ClockQuality.SYNCED)
        store.state[state_key(p)] = ledger._books[p].to_state()
    for p in patients:  # Mar 2, held while the host clock is unsynchronised: each patient's second day
        await ledger.on_reading(p, f"dev-{p}", t0, ClockQuality.UNSYNCED)
    clock.synced = True
    release = asyncio.create_task(ledger.on_reading("p1", "dev-p1", t0 + 10, ClockQuality.SYNCED))
    for _ in range(5):
        await asyncio.sleep(0)  # p1's records are in the outbox's queue, not yet committed
    assert store.pending
    await ledger.on_reading("p2", "dev-p2", t0 + 20, ClockQuality.SYNCED)
    # Crash now: p2 restarts from what is on disk, which must not be ahead of its records.
    restarted = await BillingLedger.open(store, BillingSection(), gateway_id="gw", patients=patients, clock=clock)
    p2_submitted = {r.code for _, r, _ in store.pending if r.patient == "p2"}
    assert restarted._books["p2"].setup is None or "99453" in p2_submitted
    # No crash: everything reaches the outbox, p2's set-up among it.
    for _ in range(50):
        store.release()
        await asyncio.sleep(0)
    await asyncio.wait_for(release, 2)
    assert {r.code for r in store.records if r.patient == "p2"} >= {"99453", "99445"}
