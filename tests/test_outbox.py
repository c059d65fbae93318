"""The durable outbox against real SQLite files: acceptance, leases, priorities, quotas, recovery."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.clock import ManualClock
from gateway.config.models import QuotaSection
from gateway.outbox import LeasePolicy, Outbox, OutboxClosed, OutboxFull, PendingRow, Record, seq_floor
from gateway.outbox.keys import SEQ_BLOCK, SeqCounter, parse_seq
from gateway.outbox.policy import CLASS_ORDER, Backlog, lease_shares
from gateway.records import (
    PRIORITY,
    AlarmEvent,
    AlarmRecord,
    BillingRecord,
    BillingStatus,
    ClockQuality,
    DeviceState,
    DeviceStatusRecord,
    RecordKind,
    Severity,
    SummaryRecord,
    Vital,
)

GW = "gw-test"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def summary(key: str, patient: str = "p1") -> SummaryRecord:
    return SummaryRecord(key=key, gateway_id=GW, patient=patient, time=T0, clock=ClockQuality.SYNCED,
                         vital=Vital.HEART_RATE, unit="/min", period_start=T0, period_end=T0, count=60,
                         min=55.0, mean=61.5, max=70.0, quality=0.97, devices=["ox1"])


def alarm(key: str) -> AlarmRecord:
    return AlarmRecord(key=key, gateway_id=GW, patient="p1", time=T0, clock=ClockQuality.SYNCED,
                       alarm_id="a1", event=AlarmEvent.RAISED, condition="spo2_low", technical=False,
                       severity=Severity.HIGH, vital=Vital.SPO2, value=85.0, threshold=88.0)


def status(key: str) -> DeviceStatusRecord:
    return DeviceStatusRecord(key=key, gateway_id=GW, patient="p1", time=T0, clock=ClockQuality.SYNCED,
                              device="ox1", driver="replay", state=DeviceState.CONNECTED)


def billing(service_key: str, version: int = 1) -> BillingRecord:
    key = f"{service_key}:v{version}"
    return BillingRecord(key=key, gateway_id=GW, patient="p1", time=T0, clock=ClockQuality.SYNCED,
                         service_key=service_key, version=version, code="99454",
                         status=BillingStatus.BILLABLE, period_start="2026-03-01", period_end="2026-03-30",
                         timezone="UTC", qualifying_days=16, dates=["2026-03-01"], devices=["ox1"])


async def open_box(path: Path, **kw: object) -> Outbox:
    kw.setdefault("commit_interval_ms", 5)
    kw.setdefault("free_bytes", lambda _folder: 10**12)
    return await Outbox.open(path, gateway_id=GW, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Outbox]:
    b = await open_box(tmp_path / "outbox.db")
    yield b
    await b.close()


async def drain(b: Outbox, limit: int = 10_000) -> list[PendingRow]:
    rows = await b.lease(limit)
    await b.release([r.id for r in rows])
    return rows


def moved_aside(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if ".corrupt-" in p.name]


def keys_of(rows: list[PendingRow]) -> list[str]:
    return [r.key for r in rows]


# ---- round trip and durability --------------------------------------------------------------


async def test_accept_lease_ack_round_trip(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    rec = summary(b.next_key())
    await b.accept(rec)
    assert await b.wait_pending(timeout=5)
    rows = await b.lease(10)
    assert [r.key for r in rows] == [rec.key]
    row = rows[0]
    assert row.kind is RecordKind.SUMMARY and row.patient == "p1"
    assert SummaryRecord.model_validate_json(row.payload) == rec
    assert row.seq == parse_seq(GW, rec.key)
    assert await b.lease(10) == []  # leased rows are not handed out twice
    await b.ack([row.id])
    assert await b.lease(10) == []
    await b.close()
    b2 = await open_box(tmp_path / "o.db")
    assert await b2.lease(10) == []
    st = b2.stats()
    assert (st.accepted, st.delivered, st.depth) == (1, 1, 0)
    assert sqlite3.connect(tmp_path / "o.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert st.last_delivery is not None
    await b2.close()


async def test_row_ids_are_never_reused(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    await b.accept(summary(b.next_key()))
    (first,) = await b.lease(5)
    await b.ack([first.id])
    await b.close()
    b = await open_box(tmp_path / "o.db")
    await b.accept(summary(b.next_key()))
    (second,) = await b.lease(5)
    assert second.id > first.id  # a stale ack of the old id cannot hit the new row
    await b.ack([first.id])
    await b.release([second.id])
    assert [r.id for r in await b.lease(5)] == [second.id]
    await b.close()


async def test_release_returns_row_with_same_key(box: Outbox) -> None:
    await box.accept(summary(box.next_key()))
    (row,) = await box.lease(5)
    await box.release([row.id])
    (again,) = await box.lease(5)
    assert (again.id, again.key, again.payload) == (row.id, row.key, row.payload)


async def test_leased_rows_return_to_pending_on_reopen(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    for _ in range(3):
        await b.accept(summary(b.next_key()))
    leased = await b.lease(2)
    assert b.stats().classes[RecordKind.SUMMARY].leased == 2
    await b.close()  # the uplink never acked
    b2 = await open_box(tmp_path / "o.db")
    assert b2.stats().classes[RecordKind.SUMMARY].pending == 3
    rows = await b2.lease(10)
    assert set(keys_of(leased)) <= set(keys_of(rows)) and len(rows) == 3
    await b2.close()


async def test_unacked_rows_survive_and_acked_are_gone_after_reopen(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    recs = [summary(b.next_key()) for _ in range(10)]
    await asyncio.gather(*(b.submit(r) for r in recs))
    rows = await b.lease(4)
    await b.ack([r.id for r in rows])
    await b.close()  # close flushes the queued acks
    b2 = await open_box(tmp_path / "o.db")
    left = await b2.lease(100)
    assert set(keys_of(left)) == {r.key for r in recs} - set(keys_of(rows))
    await b2.close()


async def test_closed_outbox_refuses_work(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    await b.close()
    await b.close()  # idempotent
    with pytest.raises(OutboxClosed):
        await b.accept(summary(f"{GW}:1"))
    with pytest.raises(OutboxClosed):
        await b.lease(1)


async def test_close_flushes_queued_submits(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db", commit_interval_ms=5000)
    futs = [b.submit(summary(b.next_key())) for _ in range(50)]
    await b.close()
    assert all(f.done() and f.exception() is None for f in futs)
    assert Outbox.inspect(tmp_path / "o.db").classes[RecordKind.SUMMARY].pending == 50


# ---- keys -----------------------------------------------------------------------------------


async def test_next_key_strictly_increasing_across_reopen(tmp_path: Path) -> None:
    seen: list[int] = []
    for _ in range(3):
        b = await open_box(tmp_path / "o.db")
        for _ in range(5):
            seq = parse_seq(GW, b.next_key())
            assert seq is not None
            seen.append(seq)
        await b.close()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


async def test_next_key_crossing_a_block_persists_the_reservation(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    last = 0
    for _ in range(SEQ_BLOCK + 10):  # crosses into the second block
        seq = parse_seq(GW, b.next_key())
        assert seq is not None and seq > last
        last = seq
    await b.accept(summary(f"{GW}:{last}"))
    await b.close()
    b2 = await open_box(tmp_path / "o.db")
    first = parse_seq(GW, b2.next_key())
    assert first is not None and first > last
    await b2.close()


def test_seq_counter_reserves_before_handing_out() -> None:
    reserved: list[int] = []
    c = SeqCounter(5, 7, reserved.append, block=3)
    assert [c.next() for _ in range(5)] == [5, 6, 7, 8, 9]
    assert reserved == [10]  # the block [7, 10) was reserved before 7 was returned
    assert parse_seq("gw", "gw:12") == 12
    assert parse_seq("gw", "other:12") is None
    assert parse_seq("gw", "gw:svc:v1") is None


# ---- idempotency ----------------------------------------------------------------------------


async def test_duplicate_pending_key_is_a_noop(box: Outbox) -> None:
    rec = summary(box.next_key())
    await box.accept(rec)
    await box.accept(rec)
    await asyncio.gather(box.submit(billing("svc-A")), box.submit(billing("svc-A")))
    rows = await drain(box)
    assert sorted(keys_of(rows)) == sorted([rec.key, "svc-A:v1"])
    assert box.stats().accepted == 2


async def test_redelivered_billing_key_is_a_noop_after_delivery(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    await b.accept(billing("svc-B"))
    rows = await b.lease(5)
    await b.ack([r.id for r in rows])
    await b.close()
    b2 = await open_box(tmp_path / "o.db")  # e.g. the ledger re-emits after a restart
    await b2.accept(billing("svc-B"))
    await b2.accept(billing("svc-B", version=2))  # a new version is a new record
    assert keys_of(await drain(b2)) == ["svc-B:v2"]
    await b2.close()


async def test_delivered_keys_are_forgotten_after_a_week(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    b = await open_box(tmp_path / "o.db", clock=lambda: now[0])
    await b.accept(billing("svc-old"))
    rows = await b.lease(5)
    await b.ack([r.id for r in rows])
    await b.close()
    now[0] += 8 * 86_400.0
    b = await open_box(tmp_path / "o.db", clock=lambda: now[0])
    await b.accept(summary(b.next_key()))  # the first commit of a run prunes the delivered table
    await b.accept(billing("svc-old"))  # no longer remembered: stored again
    assert "svc-old:v1" in keys_of(await drain(b))
    await b.close()


# ---- state table ----------------------------------------------------------------------------


async def test_state_commits_with_record_and_loads_by_prefix(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    await b.accept(billing("svc-C"), state={"ledger/p1/2026-03": b"16", "ledger/p1/tmp": b"x"})
    await b.submit_state({"ledger/p1/tmp": None, "other/x": b"1"})
    assert await b.load_state("ledger/") == {"ledger/p1/2026-03": b"16"}
    await b.close()
    b2 = await open_box(tmp_path / "o.db")
    assert await b2.load_state("ledger/p1/") == {"ledger/p1/2026-03": b"16"}
    assert await b2.load_state("") == {"ledger/p1/2026-03": b"16", "other/x": b"1"}
    assert Outbox.read_state(tmp_path / "o.db", "other/") == {"other/x": b"1"}  # CLI, daemon running
    await b2.close()


async def test_state_of_a_refused_billing_record_is_not_written(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db", quotas=QuotaSection(billing=100))
    await asyncio.gather(*(b.submit(billing(f"svc-{i}")) for i in range(100)))
    with pytest.raises(OutboxFull):
        await b.accept(billing("svc-over"), state={"ledger/over": b"counted"})
    assert await b.load_state("ledger/") == {}
    await b.close()


# ---- priority and the starvation guard ------------------------------------------------------


async def test_priority_order_and_seq_order_within_class(tmp_path: Path) -> None:
    # every_n large: this test looks at plain priority only
    b = await open_box(tmp_path / "o.db", lease_policy=LeasePolicy(every_n=1000, max_age_s=1e9))
    made: list[Record] = [make(b.next_key()) for make in (status, summary, alarm, summary, status, alarm)]
    # submitted in reverse creation order: the lease must still follow seq within a class
    for rec in reversed(made):
        await b.accept(rec)
    await b.accept(billing("svc-P"))
    rows = await b.lease(100)
    order = [r.kind for r in rows]
    assert order == sorted(order, key=PRIORITY.__getitem__)
    for kind in RecordKind:
        seqs = [r.seq for r in rows if r.kind is kind]
        assert seqs == sorted(seqs)
    await b.close()


async def test_starvation_guard_every_nth_batch(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db", lease_policy=LeasePolicy(every_n=3, max_age_s=1e9))
    await asyncio.gather(*(b.submit(alarm(b.next_key())) for _ in range(40)))
    await asyncio.gather(*(b.submit(status(b.next_key())) for _ in range(5)))
    kinds_per_batch = []
    for _ in range(6):
        rows = await b.lease(4)
        kinds_per_batch.append({r.kind for r in rows})
        await b.ack([r.id for r in rows])
    # batches 3 and 6 carry status despite a backlog of alarms; the others are alarms only
    assert [RecordKind.STATUS in k for k in kinds_per_batch] == [False, False, True, False, False, True]
    await b.close()


async def test_starvation_guard_by_age(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    b = await open_box(tmp_path / "o.db", clock=lambda: now[0],
                       lease_policy=LeasePolicy(every_n=1000, max_age_s=30.0))
    await b.accept(summary(b.next_key()))
    await asyncio.gather(*(b.submit(alarm(b.next_key())) for _ in range(20)))
    rows = await b.lease(4)
    assert {r.kind for r in rows} == {RecordKind.ALARM}
    await b.ack([r.id for r in rows])
    now[0] += 31.0  # the summary has now waited longer than max_age_s
    rows = await b.lease(4)
    assert RecordKind.SUMMARY in {r.kind for r in rows}
    assert b.stats().classes[RecordKind.ALARM].oldest_pending_age_s == pytest.approx(31.0)
    await b.close()


def test_lease_shares_are_bounded_and_fill_the_batch() -> None:
    backlog = {RecordKind.ALARM: Backlog(100, 0.0), RecordKind.BILLING: Backlog(100, 0.0),
               RecordKind.SUMMARY: Backlog(100, 0.0), RecordKind.STATUS: Backlog(1, 0.0)}
    shares = lease_shares(10, backlog, now=0.0, batch_no=4, policy=LeasePolicy(every_n=4))
    assert sum(shares.values()) == 10
    assert shares[RecordKind.STATUS] == 1 and shares[RecordKind.SUMMARY] >= 1
    assert shares[RecordKind.ALARM] >= 5  # starving classes together take at most half
    plain = lease_shares(10, backlog, now=0.0, batch_no=1, policy=LeasePolicy(every_n=4))
    assert plain == {RecordKind.ALARM: 10, RecordKind.EVIDENCE: 0, RecordKind.BILLING: 0, RecordKind.SUMMARY: 0,
                     RecordKind.STATUS: 0, RecordKind.TOMBSTONE: 0}


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 8, 10])
@pytest.mark.parametrize("lower", [1, 2, 3, 4])
def test_starving_classes_never_take_the_whole_batch_from_the_highest_class(limit: int, lower: int) -> None:
    # every class below the top one waiting is owed a share (periodic batch): a batch smaller than
    # their number must still carry the top class, and together they take at most half of it
    for top_rank in (0, 1):
        kinds = list(CLASS_ORDER[top_rank : top_rank + 1 + lower])
        backlog = {k: Backlog(1000, 0.0) for k in kinds}
        for turn in range(6):
            shares = lease_shares(limit, backlog, now=1e9, batch_no=4, policy=LeasePolicy(every_n=4), turn=turn)
            assert sum(shares.values()) == limit
            assert shares[kinds[0]] >= 1
            assert sum(shares[k] for k in kinds[1:]) <= limit // 2


def test_starving_classes_take_turns_when_the_batch_cannot_serve_them_all() -> None:
    backlog = {k: Backlog(1000, 0.0) for k in CLASS_ORDER[:4]}
    served = []
    for turn in range(3):  # batch of 2: one slot for the starving, three of them waiting
        shares = lease_shares(2, backlog, now=0.0, batch_no=1, policy=LeasePolicy(every_n=1), turn=turn)
        assert shares[CLASS_ORDER[0]] == 1
        served += [k for k in CLASS_ORDER[1:4] if shares[k]]
    assert sorted(served) == sorted(CLASS_ORDER[1:4])


@pytest.mark.parametrize("window", [1, 2, 3])
async def test_an_alarm_is_leased_in_the_next_batch_behind_an_old_backlog(tmp_path: Path, window: int) -> None:
    # after an outage: hundreds of summaries, status and billing records an hour old, then an alarm
    now = [1_800_000_000.0]
    b = await open_box(tmp_path / "o.db", clock=lambda: now[0])
    backlog = [make(b.next_key()) for _ in range(100) for make in (summary, status)]
    await asyncio.gather(*(b.submit(r) for r in backlog), *(b.submit(billing(f"svc{i}")) for i in range(100)))
    now[0] += 3600.0
    rows = await b.lease(window)  # one batch of the backlog goes first
    await b.ack([r.id for r in rows])
    urgent = alarm(b.next_key())
    await b.accept(urgent)
    rows = await b.lease(window)
    assert urgent.key in keys_of(rows)
    seen = {r.kind for r in rows}
    # ...and the lower classes still move, taking turns in what is left of the batch (a batch of
    # one row goes to the highest class waiting)
    for _ in range(6):
        await b.ack([r.id for r in rows])
        rows = await b.lease(window)
        seen |= {r.kind for r in rows}
    assert seen == {RecordKind.ALARM, RecordKind.BILLING} if window == 1 else set(RecordKind) - {
        RecordKind.EVIDENCE, RecordKind.TOMBSTONE}
    await b.close()


# ---- bounds: quotas, disk floor, disk full --------------------------------------------------


async def test_summary_quota_drops_oldest_and_counts(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db", quotas=QuotaSection(summary=100))
    recs = [summary(b.next_key()) for _ in range(130)]
    with capture_logs() as logs:
        await asyncio.gather(*(b.submit(r) for r in recs))  # summaries never fail the producer
    st = b.stats().classes[RecordKind.SUMMARY]
    assert (st.pending, st.dropped) == (100, 30)
    rows = await drain(b, 1000)
    assert keys_of(rows) == [r.key for r in recs[30:]]  # the oldest 30 went
    # one warning with counts, not one per row (later drops within a minute are summed into the
    # next warning; how the 130 submits split into commits is up to timing)
    drops = [e for e in logs if e["event"] == "outbox_dropped"]
    assert len(drops) == 1 and 1 <= drops[0]["summary"] <= 30 and drops[0]["log_level"] == "warning"
    await b.close()
    assert Outbox.inspect(tmp_path / "o.db").classes[RecordKind.SUMMARY].dropped == 30


async def test_drop_warnings_are_one_a_minute_on_the_injected_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    b = await open_box(tmp_path / "o.db", quotas=QuotaSection(summary=100), monotonic=clock.monotonic)

    async def overflow(n: int) -> list[dict[str, Any]]:
        with capture_logs() as logs:
            for _ in range(n):  # one commit each: each drops one row
                await b.accept(summary(b.next_key()))
        return [e for e in logs if e["event"] == "outbox_dropped"]

    await asyncio.gather(*(b.submit(summary(b.next_key())) for _ in range(100)))  # fills the quota
    assert [e["summary"] for e in await overflow(3)] == [1]  # the first drop is told at once
    clock.advance(59.0)
    assert await overflow(4) == []  # within the minute: counted, not logged
    clock.advance(1.0)
    assert [e["summary"] for e in await overflow(1)] == [7]  # then the sum of what was held back
    assert b.stats().classes[RecordKind.SUMMARY].dropped == 8
    await b.close()


async def test_quota_drop_spares_leased_rows(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db", quotas=QuotaSection(status=100))
    first = [status(b.next_key()) for _ in range(100)]
    await asyncio.gather(*(b.submit(r) for r in first))
    in_flight = await b.lease(3)
    await b.accept(status(b.next_key()))
    await b.release([r.id for r in in_flight])
    rows = await drain(b, 1000)
    assert set(keys_of(in_flight)) <= set(keys_of(rows))
    assert first[3].key not in keys_of(rows)  # the oldest row not in flight was dropped
    assert b.stats().classes[RecordKind.STATUS].dropped == 1
    await b.close()


async def test_billing_over_quota_refused_with_alarm_once(tmp_path: Path) -> None:
    alarms: list[tuple[str, str]] = []
    b = await open_box(tmp_path / "o.db", quotas=QuotaSection(billing=100),
                       on_alarm=lambda c, d: alarms.append((c, d)))
    await asyncio.gather(*(b.submit(billing(f"svc-{i}")) for i in range(100)))
    results = await asyncio.gather(*(b.submit(billing(f"svc-x{i}")) for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, OutboxFull) and r.retryable for r in results)
    with pytest.raises(OutboxFull):
        await b.accept(billing("svc-late"))
    assert [c for c, _ in alarms] == ["outbox_full"]
    assert "billing" in alarms[0][1]
    st = b.stats()
    assert st.refused == 6 and st.classes[RecordKind.BILLING].pending == 100
    assert st.classes[RecordKind.BILLING].dropped == 0
    # room again after delivery: the same record is taken
    rows = await b.lease(10)
    await b.ack([r.id for r in rows])
    await b.accept(billing("svc-late"))
    await b.close()


async def test_alarms_over_quota_are_refused_never_the_oldest_dropped(tmp_path: Path) -> None:
    alarms: list[tuple[str, str]] = []
    b = await open_box(tmp_path / "o.db", quotas=QuotaSection(alarm=100),
                       on_alarm=lambda c, d: alarms.append((c, d)))
    recs = [alarm(b.next_key()) for _ in range(150)]
    results = await asyncio.gather(*(b.submit(r) for r in recs), return_exceptions=True)
    taken = [r.key for r, res in zip(recs, results, strict=True) if res is None]
    refused = [res for res in results if res is not None]
    # the producer hears of every alarm not stored; the stored ones are exactly the first 100
    assert taken == [r.key for r in recs[:100]]
    assert len(refused) == 50 and all(isinstance(e, OutboxFull) and e.retryable for e in refused)
    st = b.stats()
    assert st.classes[RecordKind.ALARM].dropped == 0 and st.refused == 50
    assert keys_of(await drain(b, 1000)) == taken
    assert [c for c, _ in alarms] == ["outbox_full"] and "alarm" in alarms[0][1]
    # a re-submitted stored alarm is a no-op, not a refusal, even at the quota
    await b.accept(recs[0])
    # room again after delivery: a refused alarm is taken when tried again
    rows = await b.lease(10)
    await b.ack([r.id for r in rows])
    await b.accept(recs[100])
    await b.close()


async def test_disk_floor_drops_summaries_and_still_stores_alarms_and_billing(tmp_path: Path) -> None:
    free = [10**12]
    alarms: list[tuple[str, str]] = []
    b = await open_box(tmp_path / "o.db", min_free_mb=64, free_bytes=lambda _f: free[0],
                       on_alarm=lambda c, d: alarms.append((c, d)))
    olds = [summary(b.next_key()) for _ in range(3)]
    await asyncio.gather(*(b.submit(r) for r in olds))
    free[0] = 10 * 1024 * 1024  # below the 64 MB floor
    await b.accept(summary(b.next_key()))  # not an error for the producer...
    assert b.stats().classes[RecordKind.SUMMARY].dropped == 1  # ...but dropped and counted
    await b.accept(billing("svc-F"))  # room made by dropping the oldest summary
    assert [c for c, _ in alarms] == ["outbox_full"] and "below 64 MB" in alarms[0][1]
    await b.accept(alarm(b.next_key()))  # and the next
    left = await drain(b)
    assert [r.key for r in left if r.kind is RecordKind.SUMMARY] == [olds[2].key]
    # nothing left to drop but the disk still has space: alarms and billing are stored all the same
    more = [alarm(b.next_key()) for _ in range(3)]
    await asyncio.gather(*(b.accept(r) for r in more), b.accept(alarm(b.next_key())), b.accept(billing("svc-G")))
    left = await drain(b)
    assert [r.kind for r in left].count(RecordKind.ALARM) == 5
    assert [r.kind for r in left].count(RecordKind.BILLING) == 2 and b.stats().refused == 0
    assert not [r for r in left if r.kind is RecordKind.SUMMARY]
    assert [c for c, _ in alarms] == ["outbox_full"]  # one episode
    free[0] = 10**12
    await b.accept(summary(b.next_key()))
    assert b.stats().classes[RecordKind.SUMMARY].dropped == 1 + 3
    await b.close()


async def test_disk_full_during_commit_keeps_running(tmp_path: Path) -> None:
    # max_db_bytes makes SQLite itself fail with SQLITE_FULL, as a full SD card would
    alarms: list[str] = []
    b = await open_box(tmp_path / "o.db", max_db_bytes=200 * 1024, on_alarm=lambda c, _d: alarms.append(c))
    big = "x" * 4000
    n_ok = 0
    refused = 0
    for i in range(80):
        try:
            await b.accept(billing(f"svc-{big}-{i}"))
            n_ok += 1
        except OutboxFull:
            refused += 1
    assert n_ok > 0 and refused > 0
    assert alarms == ["outbox_full"]
    s_before = b.stats().classes[RecordKind.SUMMARY].dropped
    fat = summary(b.next_key()).model_copy(update={"devices": ["d" * 40_000]})
    await b.accept(fat)  # summaries: dropped and counted, no error
    assert b.stats().classes[RecordKind.SUMMARY].dropped == s_before + 1
    # delivering frees pages: billing is taken again
    rows = await b.lease(1000)
    assert len(rows) == n_ok
    await b.ack([r.id for r in rows])
    await b.accept(billing("svc-after"))
    await b.close()
    b2 = await open_box(tmp_path / "o.db")
    assert keys_of(await drain(b2)) == ["svc-after:v1"]
    await b2.close()


# ---- corruption -----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "malformed"])
async def test_corrupt_file_is_moved_aside(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "o.db"
    if damage == "garbage":
        path.write_bytes(b"this is not an sqlite file" * 200)
    else:
        b = await open_box(path)
        await asyncio.gather(*(b.submit(summary(b.next_key())) for _ in range(400)))
        await b.close()
        scribble_over_pages(path)
    alarms: list[tuple[str, str]] = []
    b = await open_box(path, on_alarm=lambda c, d: alarms.append((c, d)))
    assert [c for c, _ in alarms] == ["outbox_corrupt"]
    aside = moved_aside(tmp_path)
    assert aside and all(p.name.startswith("o.db.corrupt-") for p in aside)
    await b.accept(summary(b.next_key()))  # a fresh, working outbox
    assert len(await b.lease(10)) == 1
    await b.close()


async def test_a_file_damaged_at_start_never_renumbers_keys(tmp_path: Path) -> None:
    # Receivers drop a record under a key they already hold: after the damaged file (and its
    # reservation) is moved aside, numbering must go on above every key handed out before.
    path = tmp_path / "o.db"
    b = await open_box(path)
    used = [b.next_key() for _ in range(SEQ_BLOCK + 5)]  # crosses into a second reserved block
    await asyncio.gather(*(b.submit(summary(k)) for k in used[-50:]))
    await b.close()
    scribble_over_pages(path)
    b = await open_box(path, on_alarm=lambda c, d: None)
    assert moved_aside(tmp_path)
    fresh = b.next_key()
    await b.close()
    assert parse_seq(GW, fresh) > max(parse_seq(GW, k) or 0 for k in used)
    # and without the floor file (written by an older version) the database's reservation is used
    seq_floor.floor_path(path).unlink()
    b = await open_box(path)
    assert parse_seq(GW, b.next_key()) > parse_seq(GW, fresh)
    await b.close()


def scribble_over_pages(path: Path) -> None:
    """Overwrite the head of every page but the first (the schema): b-tree headers become junk."""
    raw = bytearray(path.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    for p in range(1, len(raw) // page):
        raw[p * page : p * page + 64] = b"\xa5" * 64
    with path.open("r+b") as f:  # in place: the open outbox keeps its file descriptor
        f.write(raw)


async def test_damage_found_while_running_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    b = await open_box(path)
    fat = ["d" * 2000]  # ~11 MB of rows: far more than SQLite's page cache holds
    await asyncio.gather(*(b.submit(summary(b.next_key()).model_copy(update={"devices": fat}))
                           for _ in range(5000)))
    await b.close()
    alarms: list[tuple[str, str]] = []
    b = await open_box(path, on_alarm=lambda c, d: alarms.append((c, d)))
    (old,) = await b.lease(1)
    await asyncio.to_thread(scribble_over_pages, path)  # the SD card goes bad under the daemon
    assert await b.lease(100_000) == []  # answered from the fresh replacement
    assert [c for c, _ in alarms] == ["outbox_corrupt"] and "5000 undelivered" in alarms[0][1]
    assert moved_aside(tmp_path)
    await b.ack([old.id])  # a lease from the damaged file: ignored, deletes nothing
    rec = summary(b.next_key())
    await b.accept(rec)
    (row,) = await b.lease(10)
    assert row.key == rec.key and row.seq > old.seq  # keys keep increasing
    await b.close()
    assert Outbox.inspect(path).depth == 1


def damage_schema(path: Path) -> None:
    """Corrupt the schema through SQLite itself (writable_schema), as a bad sector in page 1 would."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        (version,) = conn.execute("PRAGMA schema_version").fetchone()
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql = 'CREATE TABLE meta(' WHERE name = 'meta'")
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.close()


async def test_damage_found_by_a_commit_keeps_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    alarms: list[str] = []
    b = await open_box(path, on_alarm=lambda c, _d: alarms.append(c))
    await b.accept(summary(b.next_key()))
    await asyncio.to_thread(damage_schema, path)
    recs: list[Record] = [alarm(b.next_key()), billing("svc-D")]
    await asyncio.gather(*(b.submit(r, state={"ledger/x": b"1"}) for r in recs))  # accepted all the same
    assert alarms == ["outbox_corrupt"]
    assert sorted(keys_of(await drain(b))) == sorted(r.key for r in recs)  # in the fresh file
    assert await b.load_state("ledger/") == {"ledger/x": b"1"}
    await b.close()
    assert moved_aside(tmp_path)


async def test_late_ack_from_a_replaced_file_cannot_delete_a_new_row(tmp_path: Path) -> None:
    """A PUBACK for a row leased from the damaged file arrives after the replacement file has
    handed out its own first row: the two must not share an id, or the ack deletes a record
    that was never published."""
    path = tmp_path / "o.db"
    b = await open_box(path)
    await b.accept(summary(b.next_key()))
    (old,) = await b.lease(1)  # in flight to the broker
    await asyncio.to_thread(damage_schema, path)
    rec = alarm(b.next_key())
    await b.accept(rec)  # the commit finds the damage: the record lands in a fresh file
    (new,) = await b.lease(10)
    assert new.key == rec.key
    await b.ack([old.id])  # the late PUBACK of the old row
    await b.release([new.id])  # the new row's publish failed: it must still be there
    assert [r.key for r in await b.lease(10)] == [rec.key]
    await b.close()
    assert Outbox.inspect(path).depth == 1


# ---- observation ----------------------------------------------------------------------------


async def test_stats_and_inspect_while_open(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    await asyncio.gather(*(b.submit(summary(b.next_key())) for _ in range(7)),
                         b.submit(alarm(b.next_key())))
    rows = await b.lease(2)
    await b.accept(status(b.next_key()))  # one more commit records the lease for `inspect`
    st = b.stats()
    assert st.depth == 9 and st.accepted == 9
    assert st.classes[RecordKind.ALARM].leased == 1 and st.classes[RecordKind.SUMMARY].leased == 1
    assert st.commits >= 1 and st.db_bytes > 0
    seen = Outbox.inspect(tmp_path / "o.db")  # another connection while the writer runs
    assert seen.depth == 9 and seen.accepted == 9
    assert seen.classes[RecordKind.SUMMARY].leased == 1
    await b.ack([r.id for r in rows])
    await b.close()
    after = Outbox.inspect(tmp_path / "o.db")
    assert after.depth == 7 and after.delivered == 2
    assert vars(after.classes[RecordKind.SUMMARY])["pending"] == 6  # plain dataclasses: the CLI dumps them


async def test_wait_pending_times_out_then_wakes(box: Outbox) -> None:
    assert await box.wait_pending(timeout=0.01) is False
    waiter = asyncio.create_task(box.wait_pending(timeout=10))
    await box.accept(summary(box.next_key()))
    assert await waiter is True


async def test_close_wakes_wait_pending(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    waiter = asyncio.create_task(b.wait_pending())
    await asyncio.sleep(0)
    await b.close()
    with pytest.raises(OutboxClosed):
        await waiter


async def test_bad_state_values_are_the_producers_error(box: Outbox) -> None:
    bad: dict[str, object] = {"k": "not bytes"}
    with pytest.raises(TypeError):
        box.submit_state(bad)  # type: ignore[arg-type]


async def test_writer_failure_reaches_every_waiter(tmp_path: Path) -> None:
    def broken(_folder: Path) -> int:
        raise RuntimeError("a bug in the writer's path")

    alarms: list[str] = []
    b = await open_box(tmp_path / "o.db", free_bytes=broken, on_alarm=lambda c, _d: alarms.append(c))
    waiter = asyncio.create_task(b.wait_pending())
    results = await asyncio.gather(*(b.submit(summary(b.next_key())) for _ in range(3)),
                                   b.submit_state({"k": b"v"}), return_exceptions=True)
    assert all(isinstance(r, OutboxClosed) for r in results)  # nobody is left waiting forever
    assert alarms == ["outbox_failed"]
    with pytest.raises(OutboxClosed):
        await waiter
    with pytest.raises(OutboxClosed):
        await b.lease(1)
    await b.close()


async def test_alarm_hook_failure_does_not_break_the_outbox(tmp_path: Path) -> None:
    called: list[str] = []

    def hook(condition: str, _d: str) -> None:
        called.append(condition)
        raise RuntimeError("hook bug")

    b = await open_box(tmp_path / "o.db", quotas=QuotaSection(billing=100), on_alarm=hook)
    await asyncio.gather(*(b.submit(billing(f"svc-{i}")) for i in range(100)))
    with capture_logs() as logs:
        with pytest.raises(OutboxFull):
            await b.accept(billing("svc-over"))
        await b.accept(summary(b.next_key()))
    assert called == ["outbox_full"]  # the hook was really called, and its failure was contained
    assert [e["condition"] for e in logs if e["event"] == "outbox_alarm_hook_failed"] == ["outbox_full"]
    assert b.stats().depth == 101
    await b.close()




async def test_a_lease_is_answered_without_waiting_for_the_commit_queued_with_it(tmp_path: Path) -> None:
    # Commits are held at the free-space check (called once per commit): while the writer is held
    # in one, a write and a lease are queued, so the writer takes both in its next round.
    gates = [threading.Event(), threading.Event()]
    calls: list[int] = []

    def free(_folder: Path) -> int:
        calls.append(1)
        if 2 <= len(calls) <= 3:
            gates[len(calls) - 2].wait(10)
        return 10**12

    b = await open_box(tmp_path / "o.db", free_bytes=free, commit_interval_ms=1)
    try:
        await b.submit(summary(b.next_key()))  # commit 1: not held
        second = b.submit(summary(b.next_key()))  # commit 2: held
        while len(calls) < 2:  # noqa: ASYNC110 - the writer thread is not awaitable
            await asyncio.sleep(0.01)
        third = b.submit(summary(b.next_key()))
        lease = asyncio.ensure_future(b.lease(10))
        await asyncio.sleep(0)  # the lease is queued behind the third write
        gates[0].set()
        await second
        leased = await asyncio.wait_for(asyncio.shield(lease), 5)  # answered while commit 3 is held
        assert len(leased) == 2 and not third.done()
    finally:
        for g in gates:
            g.set()
    await third
    await b.close()


async def test_a_stored_payload_is_exactly_the_records_json(box: Outbox) -> None:
    # What is stored, chained and published is the model's own JSON, byte for byte
    records = [summary(box.next_key()), alarm(box.next_key()), status(box.next_key()), billing("svc-json")]
    for r in records:
        await box.submit(r)
    stored = {row.key: row.payload for row in await box.lease(10)}
    assert stored == {r.key: r.model_dump_json().encode() for r in records}


async def test_a_cancel_that_comes_with_a_record_reaches_wait_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The uplink's publisher waits in ``wait_pending``; the daemon's stop may cancel it in the
    loop turn the writer reports a new record.  Python 3.11's ``asyncio.wait_for`` then returned
    True and dropped the cancel (CPython gh-86296): the publisher never stopped."""
    waiter: asyncio.Task[bool] | None = None
    armed = False
    real = Outbox._on_writer

    def on_writer(self: Outbox, *args: Any) -> None:
        real(self, *args)
        if armed and waiter is not None and not waiter.done():
            waiter.cancel()  # in the same turn as the writer's report of the committed record

    monkeypatch.setattr(Outbox, "_on_writer", on_writer)
    b = await open_box(tmp_path / "outbox.db")
    try:
        waiter = asyncio.create_task(b.wait_pending(timeout=30.0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        armed = True
        await b.submit(summary(b.next_key()))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 5.0)
    finally:
        await b.close()
