"""The outbox's group-commit transaction as plain functions over an open connection.

``write_batch`` does everything one commit does — delete acknowledged rows, skip duplicates,
admit rows within quotas and the free-disk floor, drop the oldest of an over-quota class (never an
alarm or billing row, never a row in flight), seal and insert, write the state riding with the
records, update the counters — and returns what it changed as ``Effects``.  It reads the writer's
bookkeeping from a ``Book`` and changes nothing outside the transaction, so the writer applies the
effects only after COMMIT and a test calls it on a connection without any thread.
"""

from __future__ import annotations

import functools
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from gateway.config.models import QuotaSection
from gateway.outbox import schema
from gateway.outbox.ops import Insert, PutState, StateRows
from gateway.outbox.policy import CLASS_ORDER
from gateway.outbox.sealing import RowSealing, SealTxn
from gateway.records import RecordKind

CHUNK = 900  # host parameters per IN (...) query, well under SQLite's limit
DELIVERED_KEEP_S = 7 * 86_400.0
DELIVERED_KEEP_ROWS = 100_000
# Beyond their quota these classes refuse new rows (OutboxFull: the producer keeps the record and
# tries again) instead of dropping stored ones: an alarm or a billing record is never lost unseen.
NEVER_DROPPED = frozenset({RecordKind.BILLING, RecordKind.ALARM})


@dataclass(frozen=True, slots=True)
class Book:
    """The writer's bookkeeping as the transaction starts (read, never changed, by these functions)."""

    quotas: QuotaSection
    sealing: RowSealing
    totals: Mapping[RecordKind, int]  # rows per class
    counters: schema.Counters
    leased: Mapping[int, tuple[RecordKind, str]]  # in flight: never dropped
    deleting: Mapping[int, RecordKind]  # acked, delete pending: never dropped
    now: float  # Unix time


@dataclass(slots=True)
class Effects:
    """What one transaction changed; applied to the thread's bookkeeping only after COMMIT."""

    deleted: dict[int, RecordKind] = field(default_factory=dict)
    inserted: dict[RecordKind, int] = field(default_factory=lambda: dict.fromkeys(RecordKind, 0))
    dropped: dict[RecordKind, int] = field(default_factory=lambda: dict.fromkeys(RecordKind, 0))
    refused: list[Insert] = field(default_factory=list)
    totals: dict[RecordKind, int] | None = None  # rows per class after the transaction
    counters: schema.Counters | None = None
    sealing: SealTxn | None = None  # chain head and checkpoint as of this transaction
    # chained records dropped by quota, per class: (position, prev link, link) for the tombstone
    dropped_at: dict[str, list[tuple[int, bytes, bytes]]] = field(default_factory=dict)



def write_batch(conn: sqlite3.Connection, book: Book, inserts: list[Insert],
                states: list[tuple[Insert | PutState, StateRows]], acks: list[int],
                reserve_hi: int | None, *, below_floor: bool, prune: bool) -> Effects:
    """One group commit's writes, inside the caller's transaction."""
    eff = Effects()
    if acks:
        delete_acked(conn, eff, acks, book.now)
    totals = dict(book.totals)
    for kind in eff.deleted.values():
        totals[kind] -= 1
    new = dedupe(conn, book.sealing, inserts)
    admitted = {kind: admit(conn, book, eff, totals, kind, new[kind], below_floor)
                for kind in CLASS_ORDER if new.get(kind)}
    txn = book.sealing.begin()
    insert(conn, book, eff, totals, txn, inserts, admitted)
    eff.totals = totals
    # the ledger's state commits only together with its record: skip a refused record's state
    write_state(conn, book.sealing, states, {id(op) for op in eff.refused})
    c = next_counters(book, eff)
    eff.counters = c
    meta = [("counters", c.to_json()), *book.sealing.finish(txn)]
    eff.sealing = txn
    if reserve_hi is not None:
        meta.append(("seq_hi", str(reserve_hi)))
    conn.executemany("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", meta)
    if prune:
        conn.execute("DELETE FROM delivered WHERE at < ?", (book.now - DELIVERED_KEEP_S,))
        conn.execute(
            "DELETE FROM delivered WHERE key IN "
            "(SELECT key FROM delivered ORDER BY at DESC LIMIT -1 OFFSET ?)",
            (DELIVERED_KEEP_ROWS,),
        )
    return eff


def write_state(conn: sqlite3.Connection, sealing: RowSealing,
                states: Iterable[tuple[Insert | PutState, StateRows]], refused: set[int]) -> None:
    # last write wins, so a key set then deleted in one batch ends deleted
    last: dict[str, bytes | None] = {}
    for src, rows in states:
        if id(src) not in refused:
            last.update(rows)
    upserts, deletes = sealing.state_writes(last)
    conn.executemany("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", upserts)
    conn.executemany("DELETE FROM state WHERE key = ?", deletes)


def delete_ids(conn: sqlite3.Connection, ids: list[int]) -> None:
    """Delete outbox rows by id, many per statement (see ``insert_rows`` on executemany and the GIL)."""
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        conn.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)


def delete_acked(conn: sqlite3.Connection, eff: Effects, acks: list[int], now: float) -> None:
    delivered_keys: list[tuple[str, float]] = []
    for i in range(0, len(acks), CHUNK):
        chunk = acks[i : i + CHUNK]
        marks = ",".join("?" * len(chunk))
        for row_id, kind, key in conn.execute(
            f"SELECT id, kind, key FROM outbox WHERE id IN ({marks})", chunk
        ).fetchall():
            rk = RecordKind(kind)
            eff.deleted[int(row_id)] = rk
            if rk is RecordKind.BILLING:
                delivered_keys.append((str(key), now))
    delete_ids(conn, list(eff.deleted))
    if delivered_keys:
        conn.executemany("INSERT OR REPLACE INTO delivered(key, at) VALUES (?, ?)", delivered_keys)


def dedupe(conn: sqlite3.Connection, sealing: RowSealing, inserts: list[Insert]) -> dict[RecordKind, list[Insert]]:
    """Rows per class, without keys repeated in the batch; billing and alarm rows also without
    stored keys, and billing rows without recently delivered ones.

    Billing and alarms need the exact count of new rows before inserting (they are refused, never
    dropped, beyond their quota).  The other classes rely on INSERT OR IGNORE and its row count,
    which saves a lookup per row on the hot path.
    """
    if not inserts:
        return {}
    ident = sealing.ident
    raw = list({op.key for op in inserts if op.kind is RecordKind.BILLING})
    billing = list({ident(k) for k in raw})
    alarms = list({op.key if op.own_key else ident(op.key) for op in inserts if op.kind is RecordKind.ALARM})
    # only billing keys are remembered as delivered
    seen = stored_keys(conn, "outbox", billing + alarms) | stored_keys(conn, "delivered", billing)
    if sealing.on and raw:
        # stored or delivered in clear, before the keyring was turned on: the same record
        seen |= {ident(k) for k in stored_keys(conn, "outbox", raw) | stored_keys(conn, "delivered", raw)}
    new: dict[RecordKind, list[Insert]] = {}
    for op in inserts:
        k = op.key if op.own_key else ident(op.key)  # own keys are stored as they are
        if k in seen:
            continue
        seen.add(k)
        new.setdefault(op.kind, []).append(op)
    return new


def stored_keys(conn: sqlite3.Connection, table: str, keys: list[str]) -> set[str]:
    """Which of ``keys`` (stored identities) are in ``table``."""
    found: set[str] = set()
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i : i + CHUNK]
        marks = ",".join("?" * len(chunk))
        found.update(r[0] for r in conn.execute(f"SELECT key FROM {table} WHERE key IN ({marks})", chunk))
    return found


def admit(conn: sqlite3.Connection, book: Book, eff: Effects, totals: dict[RecordKind, int],
          kind: RecordKind, rows: list[Insert], below_floor: bool) -> list[Insert]:
    """The rows of one class that may be stored (the rest refused or dropped and counted)."""
    quota: int = getattr(book.quotas, kind.value)
    if kind in NEVER_DROPPED:
        # beyond the quota new rows are refused, never stored ones dropped
        room = min(len(rows), max(0, quota - totals[kind]))
        if below_floor:
            # the floor is kept for these classes: the least valuable rows make room first, and
            # what they cannot make is taken all the same while the disk has space (a full disk
            # fails the commit and refuses them: Writer._commit_failed)
            made = 0
            for victim in (RecordKind.STATUS, RecordKind.SUMMARY):
                made += drop_oldest(conn, book, eff, totals, victim, room - made)
        eff.refused.extend(rows[room:])
        return rows[:room]
    if below_floor:
        eff.dropped[kind] += len(rows)
        return []
    return rows


def insert(conn: sqlite3.Connection, book: Book, eff: Effects, totals: dict[RecordKind, int],
           txn: SealTxn, inserts: list[Insert], admitted: dict[RecordKind, list[Insert]]) -> None:
    """Store the admitted rows, then drop the oldest of each class over its quota."""
    sealing = book.sealing
    if sum(len(rows) for rows in admitted.values()) == len(inserts):
        ops = inserts  # nothing deduped away, refused or dropped (the usual batch): as submitted
    else:
        taken = {id(op) for rows in admitted.values() for op in rows}
        # in submission order: that is the order of their chain positions
        ops = [op for op in inserts if id(op) in taken]
    stored = insert_chained(conn, sealing, txn, ops) if sealing.on else insert_plain(conn, ops)
    for kind, count in stored.items():
        eff.inserted[kind] += count
        totals[kind] += count
    for kind in stored:
        quota: int = getattr(book.quotas, kind.value)
        if kind not in NEVER_DROPPED and totals[kind] > quota:
            drop_oldest(conn, book, eff, totals, kind, totals[kind] - quota)
    tomb = sealing.tombstone(txn, eff.dropped_at, book.now)
    if tomb is not None:
        key, patient, payload, n = tomb
        assert n is not None
        conn.execute(
            "INSERT INTO outbox(kind, key, patient, seq, created, payload, chain_n) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (RecordKind.TOMBSTONE.value, key, patient, n, book.now, payload, n),
        )
        eff.inserted[RecordKind.TOMBSTONE] += 1
        totals[RecordKind.TOMBSTONE] += 1


_KIND = attrgetter("kind")


def insert_plain(conn: sqlite3.Connection, ops: list[Insert]) -> dict[RecordKind, int]:
    """Rows in clear; a key already stored is a no-op success (idempotent re-submission)."""
    by_kind: dict[RecordKind, list[object]] = {}
    for op in ops:
        by_kind.setdefault(op.kind, []).extend((str(op.kind), op.key, op.patient, op.seq, op.created, op.payload, None))
    return {kind: insert_rows(conn, "INSERT OR IGNORE", params) for kind, params in by_kind.items()}


def insert_chained(conn: sqlite3.Connection, sealing: RowSealing, txn: SealTxn,
                   ops: list[Insert]) -> dict[RecordKind, int]:
    """Sealed, chained rows.  A chained row must really be stored (an ignored insert would leave
    its chain position empty), so a key already stored has to be known before sealing.  Looking
    every key up would cost a query per commit and an index probe per row for what is rare (a
    re-submission), so the rows go in with a plain INSERT; only if one meets a stored key is the
    attempt rolled back, the stored keys looked up and the rest sealed again (fresh nonces)."""
    before = txn.head.copy(), txn.moved
    conn.execute("SAVEPOINT chained")
    try:
        _insert_sealed(conn, sealing, txn, ops)
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK TO chained")
        txn.head, txn.moved = before[0].copy(), before[1]
        stored = stored_keys(conn, "outbox", list({sealing.ident(op.key, op.own_key) for op in ops}))
        ops = [op for op in ops if sealing.ident(op.key, op.own_key) not in stored]
        _insert_sealed(conn, sealing, txn, ops)
    conn.execute("RELEASE chained")
    return Counter(map(_KIND, ops))


def _insert_sealed(conn: sqlite3.Connection, sealing: RowSealing, txn: SealTxn, ops: list[Insert]) -> None:
    sealed = sealing.seal_many(txn, [(op.key, op.patient, op.payload, op.own_key) for op in ops])
    params: list[object] = []
    for op, (key, patient, blob, n) in zip(ops, sealed, strict=True):
        params += (str(op.kind), key, patient, op.seq, op.created, blob, n)
    insert_rows(conn, "INSERT", params)


_COLUMNS = 7  # kind, key, patient, seq, created, payload, chain_n
ROWS_PER_STATEMENT = 128  # 896 host parameters: under the 999 of SQLite builds before 3.32


@functools.cache
def _insert_sql(verb: str, rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?)"] * rows)
    return f"{verb} INTO outbox(kind, key, patient, seq, created, payload, chain_n) VALUES {values}"


def insert_rows(conn: sqlite3.Connection, verb: str, params: list[object]) -> int:
    """Insert rows given as one flat parameter list (``_COLUMNS`` per row), many rows per
    statement; returns how many were stored (an ``OR IGNORE`` verb skips existing keys).

    executemany() steps one row at a time and releases the GIL around each step, so with the
    event loop busy the writer waits for the GIL once per row (most of its time in a burst).
    A statement of 128 rows does the B-tree work of all of them in one step without the GIL,
    which the loop uses meanwhile."""
    per = ROWS_PER_STATEMENT * _COLUMNS
    stored = 0
    for i in range(0, len(params), per):
        chunk = params[i : i + per]
        stored += conn.execute(_insert_sql(verb, len(chunk) // _COLUMNS), chunk).rowcount
    return stored


def drop_oldest(conn: sqlite3.Connection, book: Book, eff: Effects, totals: dict[RecordKind, int],
                kind: RecordKind, n: int) -> int:
    if n <= 0 or totals[kind] <= 0:
        return 0
    # rows in flight are left alone (their PUBACK may be on its way), and so are rows already
    # acked whose delete waits for the next commit: they count as delivered, not dropped
    skip = sum(1 for k, _ in book.leased.values() if k is kind) + len(book.deleting)
    victims = [
        r
        for r in conn.execute(
            "SELECT id, chain_n, key, payload FROM outbox WHERE kind = ? ORDER BY seq LIMIT ?",
            (kind.value, n + skip),
        )
        if r[0] not in book.leased and r[0] not in book.deleting
    ][:n]
    ids = [r[0] for r in victims]
    for _, pos, key, blob in victims:
        info = None if pos is None else book.sealing.link_info(key, bytes(blob))
        if info is not None:
            eff.dropped_at.setdefault(kind.value, []).append((pos, *info))
    delete_ids(conn, ids)
    eff.dropped[kind] += len(ids)
    totals[kind] -= len(ids)
    return len(ids)


def next_counters(book: Book, eff: Effects) -> schema.Counters:
    old = book.counters
    dropped = dict(old.dropped)
    for k, n in eff.dropped.items():
        if n:
            dropped[k.value] = dropped.get(k.value, 0) + n
    leased: dict[str, int] = {}
    for k, _ in book.leased.values():
        leased[k.value] = leased.get(k.value, 0) + 1
    return schema.Counters(
        accepted=old.accepted + sum(eff.inserted.values()),
        delivered=old.delivered + len(eff.deleted),
        refused=old.refused + len(eff.refused),
        commits=old.commits + 1,
        last_delivery=book.now if eff.deleted else old.last_delivery,
        dropped=dropped,
        leased=leased,
    )
