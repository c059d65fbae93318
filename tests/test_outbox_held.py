"""What a producer keeps of the records the outbox refused (gateway/outbox/held.py): plain calls."""

from __future__ import annotations

from gateway.outbox import HeldRecords, OutboxClosed, OutboxFull, RecordTooLarge
from tests.test_outbox import alarm, billing, summary


def test_only_alarms_and_billing_refused_for_a_passing_reason_are_kept() -> None:
    full = OutboxFull("alarm quota reached")
    assert HeldRecords.keeps(alarm("gw:1"), full) and HeldRecords.keeps(billing("svc"), full)
    assert not HeldRecords.keeps(summary("gw:2"), full)  # the outbox drops those itself, counted
    assert not HeldRecords.keeps(alarm("gw:3"), RecordTooLarge("too large"))  # would be refused forever
    assert not HeldRecords.keeps(alarm("gw:4"), OutboxClosed("closed"))


def test_held_records_come_back_in_order_and_a_retry_refused_again_is_no_news() -> None:
    held = HeldRecords()
    a, b = alarm("gw:1"), alarm("gw:2")
    assert held.keep(a) == (True, None) and held.keep(b) == (True, None)
    assert [r.key for r in held.take()] == ["gw:1", "gw:2"] and len(held) == 0
    assert held.keep(a) == (False, None)  # tried again and refused again
    held.take()
    held.settled("gw:1")  # accepted at last
    assert held.keep(a) == (True, None)


def test_beyond_the_limit_the_oldest_held_is_given_up_and_counted() -> None:
    held = HeldRecords(limit=2)
    recs = [alarm(f"gw:{i}") for i in range(3)]
    assert held.keep(recs[0])[1] is None and held.keep(recs[1])[1] is None
    assert held.keep(recs[2]) == (True, recs[0])
    assert held.lost == 1 and [r.key for r in held.take()] == ["gw:1", "gw:2"]
