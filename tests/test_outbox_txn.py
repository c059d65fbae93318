"""The outbox's group-commit transaction, called as plain functions on a real SQLite file: no
writer thread, no event loop."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config.models import QuotaSection
from gateway.outbox import schema, txn
from gateway.outbox.ops import Insert
from gateway.outbox.sealing import RowSealing
from gateway.records import RecordKind

NOW = 1_800_000_000.0
SEALING = RowSealing.create(None, "gw")  # rows in clear, no chain: what the tests and benches use


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = schema.connect(tmp_path / "o.db")
    yield c
    c.close()


def row(kind: RecordKind, key: str, seq: int) -> Insert:
    return Insert(kind, key, "p1", seq, b"{}", NOW, None, future=None)  # type: ignore[arg-type]


def book(conn: sqlite3.Connection, quotas: QuotaSection = QuotaSection(), **kw: Any) -> txn.Book:  # noqa: B008
    return txn.Book(quotas, SEALING, schema.class_totals(conn), schema.Counters(), kw.get("leased", {}),
                    kw.get("deleting", {}), NOW)


def commit(conn: sqlite3.Connection, b: txn.Book, inserts: list[Insert], acks: list[int] | None = None,
           below_floor: bool = False) -> txn.Effects:
    conn.execute("BEGIN IMMEDIATE")
    eff = txn.write_batch(conn, b, inserts, [], acks or [], None, below_floor=below_floor, prune=False)
    conn.execute("COMMIT")
    return eff


def ids(conn: sqlite3.Connection, kind: RecordKind) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM outbox WHERE kind = ? ORDER BY seq", (kind.value,))]


def test_over_quota_drops_the_oldest_but_never_a_row_in_flight(conn: sqlite3.Connection) -> None:
    quotas = QuotaSection(summary=100)
    commit(conn, book(conn, quotas), [row(RecordKind.SUMMARY, f"s{i}", i) for i in range(100)])
    first = ids(conn, RecordKind.SUMMARY)[:3]
    leased = {i: (RecordKind.SUMMARY, "") for i in first[:2]}  # the two oldest are being published
    eff = commit(conn, book(conn, quotas, leased=leased), [row(RecordKind.SUMMARY, f"n{i}", 100 + i) for i in range(2)])
    assert eff.dropped[RecordKind.SUMMARY] == 2 and eff.inserted[RecordKind.SUMMARY] == 2
    left = ids(conn, RecordKind.SUMMARY)
    assert first[:2] == left[:2] and first[2] not in left  # in flight kept, the next oldest went
    assert eff.totals is not None and eff.totals[RecordKind.SUMMARY] == 100 == len(left)
    assert eff.counters is not None and eff.counters.dropped == {"summary": 2}


def test_billing_beyond_its_quota_is_refused_never_dropped(conn: sqlite3.Connection) -> None:
    quotas = QuotaSection(billing=100)
    commit(conn, book(conn, quotas), [row(RecordKind.BILLING, f"b{i}:v1", i) for i in range(99)])
    over = [row(RecordKind.BILLING, f"x{i}:v1", 200 + i) for i in range(3)]
    eff = commit(conn, book(conn, quotas), over)
    assert eff.inserted[RecordKind.BILLING] == 1 and eff.refused == over[1:]
    assert eff.dropped[RecordKind.BILLING] == 0 and len(ids(conn, RecordKind.BILLING)) == 100


def test_alarms_beyond_their_quota_are_refused_never_dropped(conn: sqlite3.Connection) -> None:
    quotas = QuotaSection(alarm=100)
    commit(conn, book(conn, quotas), [row(RecordKind.ALARM, f"a{i}", i) for i in range(99)])
    over = [row(RecordKind.ALARM, f"x{i}", 200 + i) for i in range(3)]
    # a stored key in the batch takes no room: it is skipped, not counted against the quota
    eff = commit(conn, book(conn, quotas), [row(RecordKind.ALARM, "a0", 0), *over])
    assert eff.inserted[RecordKind.ALARM] == 1 and eff.refused == over[1:]
    assert eff.dropped[RecordKind.ALARM] == 0 and len(ids(conn, RecordKind.ALARM)) == 100


def test_below_the_disk_floor_an_alarm_takes_the_place_of_a_status_row(conn: sqlite3.Connection) -> None:
    commit(conn, book(conn), [row(RecordKind.STATUS, "st1", 1), row(RecordKind.SUMMARY, "su1", 2)])
    eff = commit(conn, book(conn), [row(RecordKind.ALARM, "a1", 3), row(RecordKind.SUMMARY, "su2", 4)],
                 below_floor=True)
    assert eff.dropped[RecordKind.STATUS] == 1  # the least valuable row made room
    assert eff.dropped[RecordKind.SUMMARY] == 1  # the new summary was dropped, not stored
    assert ids(conn, RecordKind.ALARM) and not ids(conn, RecordKind.STATUS)


def test_below_the_disk_floor_alarms_and_billing_are_stored_with_nothing_left_to_drop(
        conn: sqlite3.Connection) -> None:
    eff = commit(conn, book(conn), [row(RecordKind.ALARM, "a1", 1), row(RecordKind.BILLING, "b1:v1", 2),
                                    row(RecordKind.EVIDENCE, "e1", 3)], below_floor=True)
    assert eff.refused == [] and eff.dropped[RecordKind.EVIDENCE] == 1
    assert eff.inserted[RecordKind.ALARM] == 1 and eff.inserted[RecordKind.BILLING] == 1


def test_an_acked_billing_key_is_remembered_so_a_resend_is_a_no_op(conn: sqlite3.Connection) -> None:
    commit(conn, book(conn), [row(RecordKind.BILLING, "svc:v1", 1)])
    (bid,) = ids(conn, RecordKind.BILLING)
    eff = commit(conn, book(conn), [], acks=[bid])
    assert eff.deleted == {bid: RecordKind.BILLING}
    assert eff.counters is not None and eff.counters.delivered == 1 and eff.counters.last_delivery == NOW
    again = commit(conn, book(conn), [row(RecordKind.BILLING, "svc:v1", 2)])
    assert again.inserted[RecordKind.BILLING] == 0 and ids(conn, RecordKind.BILLING) == []


@pytest.mark.parametrize("n", [1, txn.ROWS_PER_STATEMENT - 1, txn.ROWS_PER_STATEMENT, 2 * txn.ROWS_PER_STATEMENT + 5])
def test_rows_go_in_many_per_statement_every_one_once_in_order(conn: sqlite3.Connection, n: int) -> None:
    def params(keys: list[int]) -> list[object]:
        return [v for i in keys for v in ("summary", f"k{i}", "p1", i, NOW, b"{}", None)]

    assert txn.insert_rows(conn, "INSERT", params(list(range(0, 2 * n, 2)))) == n
    # OR IGNORE counts only the rows it stored, across statement boundaries
    assert txn.insert_rows(conn, "INSERT OR IGNORE", params(list(range(2 * n)))) == n
    assert [r[0] for r in conn.execute("SELECT seq FROM outbox ORDER BY id")][:n] == list(range(0, 2 * n, 2))
    assert sorted(r[0] for r in conn.execute("SELECT seq FROM outbox")) == list(range(2 * n))
    # a plain INSERT meeting a stored key fails as a whole statement (the chained path relies on it)
    with pytest.raises(sqlite3.IntegrityError):
        txn.insert_rows(conn, "INSERT", params([2 * n, 0]))
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 2 * n  # nothing of it stayed


def test_acks_beyond_one_statement_delete_exactly_those_rows(conn: sqlite3.Connection) -> None:
    n = 2 * txn.CHUNK + 7
    commit(conn, book(conn), [row(RecordKind.SUMMARY, f"s{i}", i) for i in range(n + 3)])
    acked = ids(conn, RecordKind.SUMMARY)[:n]
    eff = commit(conn, book(conn), [], acks=acked)
    assert sorted(eff.deleted) == sorted(acked)
    assert len(ids(conn, RecordKind.SUMMARY)) == 3
