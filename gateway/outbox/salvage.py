"""Getting the records out of a damaged outbox file.

A bad page on the card must cost the rows on that page, not every pending record.  Before a
damaged file is moved aside, ``repair_in_place`` rebuilds its indexes (a damaged index holds no
data of its own).  When the file is still damaged, ``copy_rows`` reads what it can of it into the
fresh file, which then carries on with it:

* ``outbox``: every readable record, its id, key, sequence number, chain position and payload
  copied byte for byte.  A sealed payload is bound to its table and stored identity only
  (``crypto``), not to the file, so it opens in the new file as it did in the old one, and the
  record goes out under the key it always had: never again under a new one.  Rows are read in
  ``id`` order; when a read hits a bad page, the next readable ``id`` is found by doubling and
  bisecting, so the rows on that page are the only ones skipped.
* ``delivered``: recently delivered billing keys (a record re-emitted under one is a no-op), read
  from both ends of the table and from its ``delivered_at`` index.
* ``state``: what producers committed with their records (billing ledger, pipeline state), from
  both ends of the table.
* ``meta``: the key reservation (``seq_hi``), the chain head, the nonce reservation and key ids,
  the counters: the writer goes on above them.

How many rows were read and how many were lost is logged (``outbox_salvaged``; an error line,
``outbox_rows_lost``, when any were).  The damaged file stays where ``schema.move_aside`` put it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger()

_CHUNK = 256
_MAX_ID = 2**63 - 1
# the fresh file writes its own
_FORMAT_META = frozenset({"min_reader_format", "written_by"})


@dataclass(frozen=True, slots=True)
class Salvaged:
    records: int = 0
    records_lost: int | None = 0  # None: rows were skipped and the file does not say how many
    delivered: int = 0
    state: int = 0
    meta: int = 0
    complete: bool = True  # every table read without a skip

    def summary(self) -> str:
        lost = "an unknown number" if self.records_lost is None else str(self.records_lost)
        return f"{self.records} records salvaged, {lost} lost"


def repair_in_place(path: Path) -> bool:
    """Rebuild every index of the file (REINDEX) and check it again; True when it now passes."""
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=10.0)) as conn:
            conn.execute("REINDEX")
            ok = [r[0] for r in conn.execute("PRAGMA quick_check(5)")] == ["ok"]
    except sqlite3.DatabaseError as e:
        log.warning("outbox_repair_failed", path=str(path), error=str(e))
        return False
    if ok:
        log.warning("outbox_repaired", path=str(path), detail="a damaged index was rebuilt in place")
    return ok


def copy_rows(src_path: Path, dst: sqlite3.Connection) -> Salvaged:
    """Copy every readable row of the damaged file ``src_path`` into the fresh file ``dst``
    (one transaction); the file itself is only read."""
    try:
        src = sqlite3.connect(src_path.resolve().as_uri() + "?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error as e:
        return _report(src_path, Salvaged(records_lost=None, complete=False), f"cannot open: {e}")
    try:
        return _copy(src_path, src, dst)
    finally:
        src.close()


def _copy(src_path: Path, src: sqlite3.Connection, dst: sqlite3.Connection) -> Salvaged:
    try:
        cols = _common_columns(src, dst, "outbox")
    except sqlite3.DatabaseError as e:  # the schema page itself is damaged: nothing can be read
        return _report(src_path, Salvaged(records_lost=None, complete=False), f"schema unreadable: {e}")
    records, skipped = _read_by_id(src, cols) if "id" in cols else ([], True)
    expected = _count(src, "outbox")
    lost: int | None = max(expected - len(records), 0) if expected is not None else (None if skipped else 0)
    delivered, d_ok = _read_by_key(src, "delivered", ("key", "at"), index="delivered_at")
    state, s_ok = _read_by_key(src, "state", ("key", "value"))
    meta, m_ok = _read_by_key(src, "meta", ("name", "value"))
    dst.execute("BEGIN IMMEDIATE")
    try:
        if records:
            dst.executemany(
                f"INSERT OR IGNORE INTO outbox({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", records
            )
        dst.executemany("INSERT OR IGNORE INTO delivered(key, at) VALUES (?, ?)", delivered)
        dst.executemany("INSERT OR IGNORE INTO state(key, value) VALUES (?, ?)", state)
        dst.executemany(
            "INSERT OR IGNORE INTO meta(name, value) VALUES (?, ?)", [m for m in meta if m[0] not in _FORMAT_META]
        )
        dst.execute("COMMIT")
    except BaseException:
        dst.execute("ROLLBACK")
        raise
    result = Salvaged(
        len(records),
        lost,
        len(delivered),
        len(state),
        len(meta),
        complete=not skipped and lost == 0 and d_ok and s_ok and m_ok,
    )
    return _report(src_path, result, None)


def _report(src_path: Path, s: Salvaged, error: str | None) -> Salvaged:
    fields = {
        "damaged": str(src_path),
        "records": s.records,
        "records_lost": s.records_lost,
        "delivered": s.delivered,
        "state": s.state,
        "meta": s.meta,
        "complete": s.complete,
    }
    if error is not None:
        fields["error"] = error
    log.info("outbox_salvaged", **fields)
    if s.records_lost != 0:
        log.error(
            "outbox_rows_lost",
            **fields,
            detail="records on damaged pages stay in the file moved aside and are not sent",
        )
    elif not s.complete:
        log.error("outbox_rows_lost", **fields, detail="some delivered keys, state or meta rows were unreadable")
    return s


def _common_columns(src: sqlite3.Connection, dst: sqlite3.Connection, table: str) -> list[str]:
    """The destination's columns the damaged file has too (it may be an older or newer format)."""
    have = {str(r[1]) for r in src.execute(f"PRAGMA table_info({table})")}
    return [str(r[1]) for r in dst.execute(f"PRAGMA table_info({table})") if str(r[1]) in have]


def _read_by_id(src: sqlite3.Connection, cols: list[str]) -> tuple[list[tuple[object, ...]], bool]:
    """Rows of ``outbox`` in id order, stepping over unreadable pages; (rows, anything skipped).

    Reads go by ``id >= start``: such a seek lands on the page holding ``start`` or after it, so
    once past a bad page no read touches it again.  A chunk that fails is read again one row at a
    time (``LIMIT 1`` stops before stepping on), so the rows before the bad page are kept.
    """
    select = f"SELECT {', '.join(cols)} FROM outbox WHERE id >= ? ORDER BY id LIMIT ?"
    at = cols.index("id")
    rows: list[tuple[object, ...]] = []
    start, skipped = -_MAX_ID, False
    while True:
        try:
            chunk = src.execute(select, (start, _CHUNK)).fetchall()
        except sqlite3.DatabaseError:
            chunk = None
        if chunk is not None:
            rows += [tuple(r) for r in chunk]
            if len(chunk) < _CHUNK:
                return rows, skipped
            start = int(chunk[-1][at]) + 1
            continue
        while True:
            try:
                row = src.execute(select, (start, 1)).fetchone()
            except sqlite3.DatabaseError:
                break
            if row is None:
                return rows, skipped
            rows.append(tuple(row))
            start = int(row[at]) + 1
        skipped = True
        nxt = _next_readable(
            lambda s: src.execute("SELECT id FROM outbox WHERE id >= ? ORDER BY id LIMIT 1", (s,)).fetchall(), start
        )
        if nxt is None:
            return rows, skipped
        start = nxt


def _next_readable(probe: Callable[[int], object], after: int) -> int | None:
    """The smallest ``s > after`` for which ``probe(s)`` (read from id ``s`` on) works, ``probe(after)``
    having failed; None when none does."""
    bad, step = after, 1
    while True:
        s = min(after + step, _MAX_ID)
        try:
            probe(s)
        except sqlite3.DatabaseError:
            if s >= _MAX_ID:
                return None
            bad, step = s, step * 2
            continue
        good = s
        break
    while good - bad > 1:  # probe(bad) fails, probe(good) works
        mid = (bad + good) // 2
        try:
            probe(mid)
        except sqlite3.DatabaseError:
            bad = mid
        else:
            good = mid
    return good


def _count(src: sqlite3.Connection, table: str) -> int | None:
    """How many rows the file says the table has: the largest count the table or any of its
    indexes gives (an intact index still counts the rows on a damaged table page)."""
    ways = [f"SELECT count(*) FROM {table} NOT INDEXED"]
    with contextlib.suppress(sqlite3.DatabaseError):
        ways += [
            f'SELECT count(*) FROM {table} INDEXED BY "{r[1]}"' for r in src.execute(f"PRAGMA index_list({table})")
        ]
    best: int | None = None
    for sql in ways:
        with contextlib.suppress(sqlite3.DatabaseError):
            n = int(src.execute(sql).fetchone()[0])
            best = n if best is None else max(best, n)
    return best


def _read_by_key(
    src: sqlite3.Connection,
    table: str,
    cols: tuple[str, str],
    index: str | None = None,
) -> tuple[list[tuple[object, ...]], bool]:
    """Rows of a small keyed table: read forwards, then backwards up to the first bad page, then
    through ``index`` when it covers them; (rows, read without a skip)."""
    out: dict[object, tuple[object, ...]] = {}
    ok = True
    scans = [
        f"SELECT {cols[0]}, {cols[1]} FROM {table} ORDER BY {cols[0]}",
        f"SELECT {cols[0]}, {cols[1]} FROM {table} ORDER BY {cols[0]} DESC",
    ]
    if index is not None:
        scans.append(f"SELECT {cols[0]}, {cols[1]} FROM {table} INDEXED BY {index}")
    for i, sql in enumerate(scans):
        try:
            for row in _rows(src, sql):
                out.setdefault(row[0], tuple(row))
            if i == 0:
                break  # read whole: nothing more to find
        except sqlite3.DatabaseError:
            ok = False
    return list(out.values()), ok


def _rows(src: sqlite3.Connection, sql: str) -> Iterator[tuple[object, ...]]:
    yield from src.execute(sql)
