"""Property tests: random reading schedules against an independent, deliberately naive recomputation."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.billing.book import PatientBook
from gateway.config.billing import BillingSection
from gateway.records import BillingRecord, BillingStatus, ClockQuality
from tests.billing_helpers import final

START = datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp()
ZONES = ["America/Chicago", "Europe/Berlin", "Asia/Kolkata", "Pacific/Auckland", "UTC"]
CFG = BillingSection()
SUPPLY = {t.code for t in CFG.supply_tiers}

# (patient, device, seconds since START) — up to 150 days, dense or sparse.
readings_st = st.lists(
    st.tuples(st.sampled_from(["p1", "p2"]), st.sampled_from(["a", "b", "c"]), st.floats(0, 150 * 86400)),
    max_size=300,
)


def naive_periods(local_dates: list[date], length: int) -> dict[date, set[date]]:
    """Period start -> its days: each period begins at the first date not covered by the previous one."""
    out: dict[date, set[date]] = {}
    end: date | None = None
    start: date | None = None
    for d in sorted(set(local_dates)):
        if end is None or d > end:
            start, end = d, d + timedelta(days=length - 1)
            out[start] = set()
        assert start is not None
        out[start].add(d)
    return out


def run(zone: str, readings: list[tuple[str, str, float]]) -> tuple[dict[str, PatientBook], list[BillingRecord]]:
    tz = ZoneInfo(zone)
    books = {p: PatientBook(p, CFG, gateway_id="gw", tz=tz) for p in ("p1", "p2")}
    records: list[BillingRecord] = []
    for patient, device, dt in sorted(readings, key=lambda r: r[2]):
        records += books[patient].observe(device, START + dt, ClockQuality.SYNCED).records
    for b in books.values():
        records += b.close_due(float("inf"))
    return books, records


@settings(max_examples=150, deadline=None)
@given(readings=readings_st, zone=st.sampled_from(ZONES))
def test_supply_records_match_a_naive_recomputation(readings: list[tuple[str, str, float]], zone: str) -> None:
    tz = ZoneInfo(zone)
    books, records = run(zone, readings)
    for patient, b in books.items():
        dates = [datetime.fromtimestamp(START + dt, tz).date() for p, _, dt in readings if p == patient]
        expected = naive_periods(dates, CFG.period_days)
        # counted days per period equal the recomputation (closed periods are all in the history here)
        assert {h.period.start: h.days for h in b.history} == {s: len(ds) for s, ds in expected.items()}
        mine = [r for r in records if r.patient == patient]
        billable = [r for r in final(mine).values() if r.code in SUPPLY and r.status is BillingStatus.BILLABLE]
        per_period: defaultdict[str, int] = defaultdict(int)
        for r in billable:
            per_period[r.period_start] += 1
            days = expected[date.fromisoformat(r.period_start)]
            assert r.dates == sorted(d.isoformat() for d in days)
            assert r.code == ("99454" if len(days) >= 16 else "99445")
        assert all(n == 1 for n in per_period.values())  # at most one supply code per patient per period
        assert set(per_period) == {s.isoformat() for s, ds in expected.items() if len(ds) >= 2}
        # versions of each service increase by one from 1, and a key is never reused for other content
        by_key: defaultdict[str, list[int]] = defaultdict(list)
        for r in mine:
            by_key[r.service_key].append(r.version)
        assert all(v == list(range(1, len(v) + 1)) for v in by_key.values())
        assert len({r.key for r in mine}) == len(mine)
        # set-up once, when some period has its days of data (days of periods apart do not add up)
        setup_due = any(len(ds) >= CFG.setup_min_days for ds in expected.values())
        assert sum(r.code == "99453" for r in mine) == (1 if setup_due else 0)


@settings(max_examples=60, deadline=None)
@given(readings=readings_st, zone=st.sampled_from(ZONES), cut=st.integers(0, 300))
def test_a_restart_anywhere_yields_the_same_records(
    readings: list[tuple[str, str, float]], zone: str, cut: int
) -> None:
    _, whole = run(zone, readings)
    _, fresh = run(zone, readings)
    assert fresh == whole  # a fresh ledger fed the same readings: same keys, same payloads
    # Stop after `cut` readings, restore from state, replay everything from the start.
    tz = ZoneInfo(zone)
    ordered = sorted(readings, key=lambda r: r[2])
    books = {p: PatientBook(p, CFG, gateway_id="gw", tz=tz) for p in ("p1", "p2")}
    keys: set[str] = set()
    for patient, device, dt in ordered[:cut]:
        keys |= {r.key for r in books[patient].observe(device, START + dt, ClockQuality.SYNCED).records}
    restored = {p: PatientBook(p, CFG, gateway_id="gw", tz=tz) for p in books}
    for p, b in restored.items():
        b.load_state(books[p].to_state())
    for patient, device, dt in ordered:
        keys |= {r.key for r in restored[patient].observe(device, START + dt, ClockQuality.SYNCED).records}
    for b in restored.values():
        keys |= {r.key for r in b.close_due(float("inf"))}
    assert keys == {r.key for r in whole}


@settings(max_examples=100, deadline=None)
@given(readings=readings_st, zone=st.sampled_from(ZONES), seed=st.randoms(use_true_random=False))
def test_out_of_order_readings_never_double_bill_or_count_a_day_outside_its_period(
    readings: list[tuple[str, str, float]], zone: str, seed: random.Random
) -> None:
    # Devices deliver stored readings late: shuffle within a window of up to two days.
    jittered = sorted(readings, key=lambda r: r[2] + seed.uniform(0, 2 * 86400))
    tz = ZoneInfo(zone)
    books = {p: PatientBook(p, CFG, gateway_id="gw", tz=tz) for p in ("p1", "p2")}
    records: list[BillingRecord] = []
    for patient, device, dt in jittered:
        records += books[patient].observe(device, START + dt, ClockQuality.SYNCED).records
    for b in books.values():
        records += b.close_due(float("inf"))
    for patient, b in books.items():
        given_dates = {datetime.fromtimestamp(START + dt, tz).date() for p, _, dt in readings if p == patient}
        periods = sorted(h.period for h in b.history)
        assert all(a.end < c.start for a, c in itertools.pairwise(periods))  # disjoint
        mine = [r for r in records if r.patient == patient]
        billable = [r for r in final(mine).values() if r.code in SUPPLY and r.status is BillingStatus.BILLABLE]
        assert len({r.period_start for r in billable}) == len(billable)
        for r in billable:
            assert all(r.period_start <= d <= r.period_end for d in r.dates)
            assert {date.fromisoformat(d) for d in r.dates} <= given_dates
        late = b.counters.get("late", 0)
        counted = sum(h.days for h in b.history)
        assert counted <= len(given_dates) and (late > 0 or counted == len(given_dates))
