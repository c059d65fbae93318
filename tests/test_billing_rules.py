"""The billing rules on a pure PatientBook: days, periods, tiers, statuses, versions, time zones."""

from __future__ import annotations

import json
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from gateway.billing.book import PatientBook, StateFormatError
from gateway.billing.days import day_end, local_date
from gateway.config.billing import BillingSection, SupplyTier
from gateway.records import BillingStatus, ClockQuality
from tests.billing_helpers import CHICAGO, billable_supply, book, brief, close_all, feed_days, local_noon, ts

D0 = date(2026, 3, 1)
S = ClockQuality.SYNCED


def test_fifteen_days_bill_99445() -> None:
    b = book()
    records = feed_days(b, D0, list(range(15))) + close_all(b)
    assert brief(records) == [
        ("99453", "billable", 1, "2026-03-01"),
        ("99445", "accruing", 1, "2026-03-01"),
        ("99445", "billable", 2, "2026-03-01"),
    ]
    last = records[-1]
    assert last.qualifying_days == 15
    assert last.dates == [(D0 + timedelta(days=k)).isoformat() for k in range(15)]
    assert last.period_end == "2026-03-30"
    assert last.key == "rpm:p1:99445:2026-03-01:v2"
    assert last.service_key == "rpm:p1:99445:2026-03-01"
    assert [e.readings for e in last.evidence] == [1] * 15


def test_sixteen_days_bill_99454_and_eligible_on_day_sixteen() -> None:
    b = book()
    records = feed_days(b, D0, list(range(15)))
    day16 = b.observe("ox1", local_noon(D0 + timedelta(days=15)), S).records
    assert brief(day16) == [("99445", "not_billable", 2, "2026-03-01"), ("99454", "eligible", 1, "2026-03-01")]
    assert day16[0].reason == "superseded by 99454"
    assert day16[1].qualifying_days == 16
    records += day16 + feed_days(b, D0, [20, 29]) + close_all(b)
    assert brief(records[-1:]) == [("99454", "billable", 2, "2026-03-01")]
    assert records[-1].qualifying_days == 18
    assert [r.code for r in billable_supply(records, b.cfg)] == ["99454"]


def test_one_day_of_data_bills_nothing_and_period_end_is_its_last_midnight() -> None:
    b = book()
    records = feed_days(b, D0, [3])
    assert records == []  # 2026 rule: set-up needs the 2 days device supply needs
    # The period starts on the first day of data and closes one grace after its last local midnight.
    end = day_end(date(2026, 4, 2), CHICAGO)
    assert b.close_due(end + b.cfg.close_grace_s - 1) == []
    assert b.current is not None
    assert b.close_due(end + b.cfg.close_grace_s) == []  # closed, but below 2 days nothing is billed
    assert b.current is None
    assert [(h.days, h.code) for h in b.history] == [(1, None)]


def test_set_up_is_billed_on_the_second_day_of_data() -> None:
    b = book()
    assert feed_days(b, D0, [0]) == []
    day2 = feed_days(b, D0, [4])
    assert brief(day2) == [("99453", "billable", 1, "2026-03-01"), ("99445", "accruing", 1, "2026-03-01")]
    assert day2[0].dates == ["2026-03-01", "2026-03-05"] and day2[0].qualifying_days == 2
    assert day2[0].reason == "first 2 day(s) of data"


def test_set_up_minimum_days_is_a_billing_setting() -> None:
    """Payers still on the older rule want 16 days of data before set-up is billed."""
    assert BillingSection().setup_min_days == 2
    b = book(BillingSection(setup_min_days=16))
    records = feed_days(b, D0, list(range(15)))
    assert "99453" not in [r.code for r in records]
    day16 = feed_days(b, D0, [15])
    assert [r.code for r in day16] == ["99453", "99445", "99454"]
    assert day16[0].qualifying_days == 16


def test_days_spread_over_a_period_boundary_count_in_their_own_period() -> None:
    b = book()
    records = feed_days(b, D0, [0, *range(25, 36)]) + close_all(b)
    bills = sorted(billable_supply(records, b.cfg), key=lambda r: r.period_start)
    assert [(r.code, r.period_start, r.period_end, r.qualifying_days) for r in bills] == [
        ("99445", "2026-03-01", "2026-03-30", 6),  # day 0 and 25..29
        ("99445", "2026-03-31", "2026-04-29", 6),  # 30..35: the next period starts with the next data
    ]
    # The reading on day 30 closed the first period (its end + grace had passed): billable before day 31.
    first_close = next(i for i, r in enumerate(records) if r.status is BillingStatus.BILLABLE and r.code == "99445")
    assert records[first_close].period_start == "2026-03-01"
    assert records[first_close + 1].period_start == "2026-03-31"


def test_after_a_pause_the_next_period_starts_with_the_next_data() -> None:
    b = book()
    records = feed_days(b, D0, [0, 1, 50, 51, 52]) + close_all(b)
    assert sorted((r.period_start, r.qualifying_days) for r in billable_supply(records, b.cfg)) == [
        ("2026-03-01", 2),
        ("2026-04-20", 3),
    ]
    # one set-up per episode, however many periods
    assert [r.code for r in records].count("99453") == 1


def test_two_devices_the_same_day_count_once() -> None:
    b = book(devices=frozenset({"ox1", "cuff1"}))
    t = local_noon(D0)
    assert b.observe("ox1", t, S).new_day
    second = b.observe("cuff1", t + 60, S)
    assert not second.new_day and second.records == []
    assert b.observe("scale9", t + 90, S).records == []  # not this patient's device: no day, counted apart
    b.observe("ox1", local_noon(D0 + timedelta(days=1)), S)
    bill = close_all(b)[-1]
    assert bill.qualifying_days == 2
    assert bill.devices == ["cuff1", "ox1"]
    assert bill.evidence[0].devices == ["cuff1", "ox1"] and bill.evidence[0].readings == 2
    assert b.counters == {"unassigned_device": 1}


def test_local_midnight_not_utc_midnight_cuts_days() -> None:
    b = book()
    # 23:59 and 00:01 local: the same UTC date (05:59Z and 06:01Z) but two local days.
    b.observe("ox1", ts("2026-03-02T23:59:00-06:00"), S)
    assert b.observe("ox1", ts("2026-03-03T00:01:00-06:00"), S).new_day
    # 17:59 and 18:01 local straddle UTC midnight yet are one local day.
    b.observe("ox1", ts("2026-03-04T17:59:00-06:00"), S)
    assert not b.observe("ox1", ts("2026-03-04T18:01:00-06:00"), S).new_day
    assert [d.isoformat() for d in b.all_dates()] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    first = b.current.days[date(2026, 3, 2)]  # type: ignore[union-attr]
    assert first.evidence().first.isoformat() == "2026-03-03T05:59:00+00:00"


def test_dst_spring_forward_and_fall_back() -> None:
    # US DST starts 8 Mar 2026: 00:30 on 9 Mar is 05:30Z (CDT, -5). A fixed -6 offset would say 8 Mar.
    assert local_date(ts("2026-03-09T05:30:00+00:00"), CHICAGO) == date(2026, 3, 9)
    assert local_date(ts("2026-03-08T05:30:00+00:00"), CHICAGO) == date(2026, 3, 7)
    # The short day is 23 hours long; the long one (1 Nov) 25 hours.
    assert day_end(date(2026, 3, 8), CHICAGO) - day_end(date(2026, 3, 7), CHICAGO) == 23 * 3600
    assert day_end(date(2026, 11, 1), CHICAGO) - day_end(date(2026, 10, 31), CHICAGO) == 25 * 3600
    b = book()
    # 01:30 happens twice on 1 Nov (CDT then CST): one day; 00:30 CST next day is another.
    assert b.observe("ox1", ts("2026-11-01T01:30:00-05:00"), S).new_day
    assert not b.observe("ox1", ts("2026-11-01T01:30:00-06:00"), S).new_day
    assert not b.observe("ox1", ts("2026-11-01T23:30:00-06:00"), S).new_day
    assert b.observe("ox1", ts("2026-11-02T00:30:00-06:00"), S).new_day
    assert [d.isoformat() for d in b.all_dates()] == ["2026-11-01", "2026-11-02"]


def test_a_period_spanning_dst_closes_at_local_midnight() -> None:
    b = book(BillingSection(close_grace_s=0))
    b.observe("ox1", ts("2026-02-20T12:00:00-06:00"), S)  # period 20 Feb .. 21 Mar, DST inside
    b.observe("ox1", ts("2026-02-21T12:00:00-06:00"), S)
    assert b.close_due(ts("2026-03-21T23:59:59-05:00")) == []
    bill = b.close_due(ts("2026-03-22T00:00:00-05:00"))
    assert brief(bill) == [("99445", "billable", 2, "2026-02-20")]
    assert bill[0].time.isoformat() == "2026-03-22T05:00:00+00:00"
    assert bill[0].timezone == "America/Chicago"


def test_late_reading_for_a_closed_period_is_counted_apart() -> None:
    b = book()
    feed_days(b, D0, [0, 1, 31])
    records = b.observe("ox1", local_noon(D0 + timedelta(days=5)), S).records
    assert records == []
    assert b.counters == {"late": 1}


def test_a_late_reading_within_the_grace_still_counts_in_its_period() -> None:
    b = book()
    feed_days(b, D0, [0, 1])
    b.observe("ox1", ts("2026-03-31T00:10:00-05:00"), S)  # opens the next period; the first is in grace
    assert len(b.opened) == 2
    b.observe("ox2", ts("2026-03-30T23:50:00-05:00"), S)  # stored reading of the last day, arriving late
    bills = billable_supply(close_all(b), b.cfg)
    assert [(r.period_start, r.qualifying_days) for r in bills] == [("2026-03-01", 3)]


def test_enrolment_anchor_uses_a_grid_and_ignores_earlier_data() -> None:
    cfg = BillingSection(period_anchor="enrolment")
    b = book(cfg, enrolment=date(2026, 3, 10))
    records = feed_days(b, D0, [0, 10, 11, 38, 39, 40]) + close_all(b)  # 1, 11, 12 Mar; 8, 9, 10 Apr
    assert b.counters == {"before_enrolment": 1}
    assert sorted((r.code, r.period_start, r.qualifying_days) for r in billable_supply(records, cfg)) == [
        ("99445", "2026-03-10", 3),  # 11, 12 Mar and 8 Apr
        ("99445", "2026-04-09", 2),  # the grid's next period, whatever the data
    ]
    assert records[0].service_key == "rpm:p1:99453:2026-03-10"
    assert b.current is None and b.history[-1].period.start == date(2026, 4, 9)


def test_set_up_rule_is_configurable() -> None:
    b = book(BillingSection(setup_min_days=2))
    assert feed_days(b, D0, [0]) == []
    records = feed_days(b, D0, [4])
    assert brief(records) == [("99453", "billable", 1, "2026-03-01"), ("99445", "accruing", 1, "2026-03-01")]
    assert records[0].dates == ["2026-03-01", "2026-03-05"]
    none = book(BillingSection(setup_code=None))
    assert [r.code for r in feed_days(none, D0, [0, 1])] == ["99445"]


def test_codes_and_thresholds_come_from_config() -> None:
    cfg = BillingSection(
        period_days=28,
        supply_tiers=[SupplyTier(code="A2", min_days=10, max_days=28)],
        eligible_at_days=12,
        setup_code=None,
    )
    b = book(cfg)
    records = feed_days(b, D0, list(range(12)))
    assert brief(records) == [("A2", "accruing", 1, "2026-03-01"), ("A2", "eligible", 2, "2026-03-01")]
    assert records[-1].period_end == "2026-03-28"


@pytest.mark.parametrize(
    "tiers",
    [
        [SupplyTier(code="A", min_days=2, max_days=16), SupplyTier(code="B", min_days=16, max_days=30)],
        [SupplyTier(code="A", min_days=2, max_days=15)],  # a full period would map to nothing
        [SupplyTier(code="99453", min_days=2, max_days=30)],
    ],
)
def test_config_refuses_ambiguous_tiers(tiers: list[SupplyTier]) -> None:
    with pytest.raises(ValidationError):
        BillingSection(supply_tiers=tiers)


def test_state_round_trip_continues_exactly() -> None:
    whole = book()
    whole_records = feed_days(whole, D0, [0, 2, 4, 6, 8, 10, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]) + close_all(
        whole
    )
    first = book()
    records = feed_days(first, D0, [0, 2, 4, 6, 8, 10, 12, 14])
    again = book()
    again.load_state(first.to_state())
    assert again.to_state() == first.to_state()
    records += feed_days(again, D0, [15, 16, 17, 18, 19, 20, 21, 22, 23]) + close_all(again)
    assert records == whole_records
    # Replaying what was already counted after a restart changes nothing and emits nothing.
    replay = book()
    replay.load_state(again.to_state())
    assert feed_days(replay, D0, [0, 2, 30]) == []


def test_unreadable_state_is_a_typed_error() -> None:
    b = book()
    for raw in (b"", b"{}", b'{"format": 99}', b'{"format": 1, "episode_start": 5}', b"\xff"):
        with pytest.raises(StateFormatError):
            b.load_state(raw)


def test_other_zone_same_instants_other_days() -> None:
    tokyo = PatientBook("p1", BillingSection(), gateway_id="gw1", tz=ZoneInfo("Asia/Tokyo"))
    chicago = book()
    t = ts("2026-03-02T20:00:00-06:00")  # 3 Mar 11:00 in Tokyo
    tokyo.observe("ox1", t, S)
    chicago.observe("ox1", t, S)
    assert tokyo.all_dates() == [date(2026, 3, 3)] and chicago.all_dates() == [date(2026, 3, 2)]


def test_a_reading_dated_on_the_last_day_of_a_closed_period_is_late() -> None:
    b = book(BillingSection(close_grace_s=0))
    feed_days(b, D0, [0, 1])
    assert brief(b.close_due(ts("2026-03-31T00:00:00-05:00"))) == [("99445", "billable", 2, "2026-03-01")]
    assert b.current is None  # nothing open: the next data opens a period, unless it is dated in the past
    assert b.observe("ox1", ts("2026-03-30T23:00:00-05:00"), S).records == []
    assert b.current is None and b.counters == {"late": 1}
    b.observe("ox1", ts("2026-03-31T08:00:00-05:00"), S)
    assert b.current is not None and list(b.current.days) == [date(2026, 3, 31)]


def test_a_meters_memory_from_before_monitoring_began_is_no_day_of_data() -> None:
    """A glucose meter's first upload brings months of stored readings, device-stamped: days before
    the hub first heard of the patient were not remote monitoring, and bill nothing."""
    b = book()
    installed = ts("2026-05-20T10:00:00-05:00")
    records = []
    for k in range(130, 0, -1):  # one stored reading a day, 2026-01-10 .. 05-19
        t = installed - k * 86400
        records += b.observe("meter", t, ClockQuality.DEVICE, received=installed).records
    assert records == [] and b.counters == {"before_monitoring": 130}
    # Measured at the set-up visit, shortly before the hub first heard of it: counts.
    records += b.observe("meter", installed - 1800, ClockQuality.DEVICE, received=installed + 5).records
    for k in range(1, 16):  # then a reading a day, uploaded as it is taken
        t = installed + k * 86400
        records += b.observe("meter", t, ClockQuality.DEVICE, received=t + 60).records
    records += close_all(b)
    supply = billable_supply(records, BillingSection())
    assert [(r.code, r.period_start, r.qualifying_days) for r in supply] == [("99454", "2026-05-20", 16)]
    # A week offline later: stored readings uploaded late still count on the days they were taken.
    late = book()
    late.observe("meter", installed, ClockQuality.SYNCED, received=installed)
    step = late.observe("meter", installed + 3 * 86400, ClockQuality.DEVICE, received=installed + 10 * 86400)
    assert step.new_day and "before_monitoring" not in late.counters


def test_a_book_saved_before_monitoring_since_was_kept_starts_it_at_its_episode() -> None:
    b = book()
    feed_days(b, D0, [0, 1])
    saved = json.loads(b.to_state())
    del saved["monitoring_since"]
    again = book()
    again.load_state(json.dumps(saved).encode())
    assert again.monitoring_since == day_end(D0 - timedelta(days=1), CHICAGO)
    stored = local_noon(D0 - timedelta(days=3))  # three days before the episode, uploaded now
    step = again.observe("m", stored, ClockQuality.DEVICE, received=local_noon(D0 + timedelta(days=2)))
    assert not step.new_day and again.counters.get("before_monitoring") == 1


def test_the_set_up_days_are_counted_within_one_period() -> None:
    """Under ``setup_min_days: 16`` (the older rule), 8 days in one period and 8 in the next are
    not 16 days of data: the set-up waits for 16 in one period, and its evidence is those days."""
    cfg = BillingSection(setup_min_days=16)
    b = book(cfg)
    records = feed_days(b, D0, list(range(8)))  # period D0 .. D0+29
    records += feed_days(b, D0, list(range(40, 48)))  # the next period: 8 days
    assert not [r for r in records if r.code == "99453"]
    records += feed_days(b, D0, list(range(48, 56)))  # 16 in that period
    (setup,) = [r for r in records if r.code == "99453"]
    assert setup.qualifying_days == 16
    assert setup.dates[0] == (D0 + timedelta(days=40)).isoformat()
    assert len(setup.evidence) == 16


def _received_in_order(b: PatientBook, days: list[date], device: str = "cuff") -> list:  # type: ignore[type-arg]
    return [r for d in days for r in b.observe(device, local_noon(d), ClockQuality.DEVICE).records]


def test_days_uploaded_behind_a_later_one_open_the_period_they_would_have_in_time_order() -> None:
    """A period closed on Mar 30; an oximeter's Apr 7 reading arrives, then a cuff's upload of
    Apr 1-6 after a week offline, then the days after.  In time order the period starts Apr 1:
    so it does, and the days of Apr 1-6 count instead of being dropped as late."""
    apr = [date(2026, 4, k) for k in range(1, 31)]
    in_order = book()
    records_in_order = feed_days(in_order, D0, list(range(0, 30, 3)))
    records_in_order += in_order.close_due(local_noon(date(2026, 4, 1)))
    records_in_order += _received_in_order(in_order, apr[:16]) + close_all(in_order)

    b = book()
    records = feed_days(b, D0, list(range(0, 30, 3)))
    records += b.close_due(local_noon(date(2026, 4, 1)))
    records += _received_in_order(b, [apr[6], *apr[:6], *apr[7:16]]) + close_all(b)
    assert "late" not in b.counters
    assert brief(billable_supply(records, BillingSection())) == brief(
        billable_supply(records_in_order, BillingSection())
    )
    assert [r.period_start for r in billable_supply(records, BillingSection())] == ["2026-03-01", "2026-04-01"]


def test_days_uploaded_before_an_open_period_that_emitted_records_are_late_or_their_own_period() -> None:
    b = book()
    feed_days(b, D0, [0, 1])  # Mar 1-2: 99453 and 99445 emitted for the period from Mar 1
    b.close_due(local_noon(date(2026, 4, 5)))
    records = _received_in_order(b, [date(2026, 5, 10), date(2026, 5, 11)])  # a period from May 10, with records
    assert [r.period_start for r in records if r.code == "99445"] == ["2026-05-10"]
    # Apr 20 would move that period's start and so its records' keys: late.
    assert _received_in_order(b, [date(2026, 4, 20)]) == [] and b.counters["late"] == 1
    # Apr 1-5 make a period of their own that ends before May 10: counted, and billed when it closes.
    records = _received_in_order(b, [date(2026, 4, k) for k in range(1, 6)]) + close_all(b)
    supply = billable_supply(records, BillingSection())
    assert [(r.code, r.period_start, r.qualifying_days) for r in supply] == [
        ("99445", "2026-04-01", 5),
        ("99445", "2026-05-10", 2),
    ]
