"""The outbox's single writer: one thread owns the SQLite connection and does group commits.

The event loop never touches the database.  It appends operations to a FIFO (``Writer.put``,
a lock and a list: no I/O); the thread drains the FIFO, keeps every write of the batch in memory
and commits them in ONE transaction when ``interval_s`` has passed since the previous commit or
``max_records`` writes are waiting.  Leases are answered at once from committed rows only (no
transaction is open between commits), so a row is never published before it is accepted.
Results travel back with ``loop.call_soon_threadsafe``, once per wake-up, not once per row.

All bookkeeping that decides what a lease may return (leased ids, acked-but-not-yet-deleted ids,
per-class row counts) lives in this thread; the loop sees an immutable ``Snapshot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import structlog

from gateway.outbox import salvage, schema, seq_floor, txn
from gateway.outbox.keys import SEQ_BLOCK
from gateway.outbox.ops import (
    Ack,
    Burst,
    Close,
    Completion,
    Fut,
    Insert,
    Lease,
    LoadState,
    Op,
    Opened,
    Post,
    PutState,
    Release,
    Reserve,
    Settings,
    Snapshot,
    StateRows,
)
from gateway.outbox.policy import CLASS_ORDER, Backlog, lease_shares, starving_classes
from gateway.outbox.sealing import RowSealing
from gateway.outbox.types import OutboxClosed, OutboxError, OutboxFull, OutboxKeyError, PendingRow
from gateway.records import RecordKind

log = structlog.get_logger()

_PRUNE_EVERY_S = 600.0
_DROP_LOG_EVERY_S = 60.0
_REFUSABLE = txn.NEVER_DROPPED  # refused (OutboxFull), never dropped

class Writer:
    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop, post: Post) -> None:
        self._s = settings
        self._loop = loop
        self._post_cb = post
        self._cond = threading.Condition()
        # guarded by _cond
        self._queue: list[Op] = []
        self._queued_writes = 0
        self._urgent = False
        self._accepting = True
        # writer thread only
        self._conn: sqlite3.Connection | None = None
        self._inserts: list[Insert] = []
        self._states: list[tuple[Insert | PutState, StateRows]] = []
        self._acks: list[int] = []
        self._reserve_hi: int | None = None
        self._seq_hi = 0  # highest key reservation seen: a replacement file must carry it over
        self._id_hi = 0  # highest row id handed out in a lease: a replacement file's ids start above it
        self._batch_ops = 0
        self._committing: list[Fut] = []  # futures of the batch being committed, for _fail_everything
        self._leased: dict[int, tuple[RecordKind, str]] = {}
        self._deleting: dict[int, RecordKind] = {}
        self._totals: dict[RecordKind, int] = dict.fromkeys(RecordKind, 0)
        self._oldest: dict[RecordKind, float | None] = dict.fromkeys(RecordKind, None)
        self._counters = schema.Counters()
        self._db_bytes = 0
        self._last_commit = -math.inf
        self._last_prune = -math.inf
        self._lease_batches = 0
        self._starving_turn = 0  # batches so far with starving classes: whose turn it is (policy.lease_shares)
        self._episodes: set[str] = set()
        self._drops_unlogged: dict[RecordKind, int] = dict.fromkeys(RecordKind, 0)
        self._drop_logged_at = -math.inf
        self._sealing = RowSealing.create(settings.keyring, settings.gateway_id)
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._opened: Fut = loop.create_future()

    # ---- loop side ----------------------------------------------------------------------

    async def start(self) -> Opened:
        self._thread.start()
        opened: Opened = await self._opened
        return opened

    def put(self, op: Op, *, write: bool = False, urgent: bool = False) -> None:
        """Queue an operation (called on the loop; never blocks on I/O)."""
        with self._cond:
            if not self._accepting:
                raise OutboxClosed("the outbox is closed")
            if isinstance(op, Close):
                self._accepting = False
                urgent = True
            self._queue.append(op)
            if write:
                # one per write the batch will count (``_batch_ops``): a burst counts each of its parts
                n = len(op.inserts) + (op.state is not None) if isinstance(op, Burst) else 1
                starts = self._queued_writes == 0
                self._queued_writes += n
                # wake the thread when a batch starts (it then sleeps until the commit is due)
                # and when the batch is big enough to commit at once
                urgent = urgent or starts or self._queued_writes >= self._s.max_records
            # once set, the flag stays until the thread takes the queue (under this lock), so a
            # second notify finds the thread already woken or busy: in a burst every put would
            # otherwise pay one (the queue stays at max_records while a batch is sealed)
            if urgent and not self._urgent:
                self._urgent = True
                self._cond.notify()

    @property
    def stopped(self) -> bool:
        """True once closing or after the thread died: no further operation is taken."""
        with self._cond:
            return not self._accepting

    async def join(self) -> None:
        await asyncio.to_thread(self._thread.join)

    # ---- thread -------------------------------------------------------------------------

    def _post(self, completions: list[Completion], snapshot: Snapshot | None,
              alarms: list[tuple[str, str]]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is left to tell
            self._loop.call_soon_threadsafe(self._post_cb, completions, snapshot, alarms)

    def _run(self) -> None:
        alarms: list[tuple[str, str]] = []
        try:
            opened = self._open(alarms)
        except BaseException as e:
            err = e if isinstance(e, OutboxError) else OutboxError(f"cannot open outbox: {e}")
            with self._cond:
                self._accepting = False
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._post([(self._opened, err, None)], None, alarms)
            return
        self._post([(self._opened, None, opened)], opened.snapshot, alarms)
        try:
            self._serve()
        except BaseException as e:
            log.exception("outbox_writer_failed", error=str(e))
            self._fail_everything(e)
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _open(self, alarms: list[tuple[str, str]]) -> Opened:
        moved: list[Path] = []

        def corrupt(detail: str, aside: Path) -> None:
            alarms.append(("outbox_corrupt", detail))
            moved.append(aside)

        try:
            # before anything touches the file: a wrong key must leave it exactly as it was
            self._sealing.adopt(schema.peek_meta(self._s.path).get)
            conn = schema.open_or_recover(self._s.path, on_corrupt=corrupt, max_db_bytes=self._s.max_db_bytes)
            self._conn = conn
            self._sealing.adopt(lambda name: schema.read_meta(conn, name))
        except OutboxKeyError as e:
            alarms.append(("outbox_key", str(e)))
            raise
        salvaged = schema.salvage_meta(moved[0]) if moved else {}
        if moved:
            # a fresh nonce salt: the counter adopted above came from the damaged file read without
            # its WAL, possibly below nonces its last commits used under the same key
            self._sealing.new_file()
            self._sealing.carry_over(salvaged, str(moved[0]))
        if self._s.quarantine_max_age_s is not None:
            schema.purge_quarantine(self._s.path, self._s.quarantine_max_age_s, time.time())
        raw_hi = schema.read_meta(conn, "seq_hi")
        # the floor file outlives a damaged database: numbering never restarts below it
        start = max(int(raw_hi) if raw_hi and raw_hi.isdigit() else 1, seq_floor.read(self._s.path))
        limit = start + SEQ_BLOCK
        self._seq_hi = limit
        self._save_floor(limit)
        self._counters = schema.Counters.from_json(schema.read_meta(conn, "counters") or salvaged.get("counters"))
        # leases do not survive a restart: every stored row is pending again
        self._counters.leased = {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)",
                [("seq_hi", str(limit)), ("counters", self._counters.to_json()), *self._sealing.meta_rows()],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._totals = schema.class_totals(conn)
        self._oldest = schema.oldest_created(conn)
        self._db_bytes = schema.file_bytes(self._s.path)
        log.info("outbox_opened", path=str(self._s.path), pending=sum(self._totals.values()),
                 **{f"pending_{k.value}": n for k, n in self._totals.items() if n})
        return Opened(seq_start=start, seq_limit=limit, snapshot=self._snapshot())

    def _save_floor(self, hi: int) -> None:
        try:
            seq_floor.write(self._s.path, hi)
        except OSError as e:
            # the reservation in the database still holds; only a damaged-file restart would
            # then renumber from what the database had
            log.warning("outbox_seq_floor_not_saved", path=str(seq_floor.floor_path(self._s.path)), error=str(e))

    def _serve(self) -> None:
        interval = self._s.interval_s
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    due = self._queued_writes > 0 and now >= self._last_commit + interval
                    if self._urgent or due or self._queued_writes >= self._s.max_records:
                        break
                    timeout = self._last_commit + interval - now if self._queued_writes > 0 else None
                    self._cond.wait(timeout)
                ops, self._queue = self._queue, []
                self._urgent = False
            completions: list[Completion] = []
            alarms: list[tuple[str, str]] = []
            closing: Close | None = None
            for op in ops:
                closing = self._handle(op, completions, alarms) or closing
            now = time.monotonic()
            if self._batch_ops and (
                closing is not None
                or now >= self._last_commit + interval
                or self._batch_ops >= self._s.max_records
            ):
                if completions:
                    # leases and state reads are answered now, not after the commit: a big batch
                    # (sealing, fsync) would otherwise hold up delivery for as long as it takes
                    self._post(completions, self._snapshot(), alarms)
                    completions, alarms = [], []
                self._commit(completions, alarms)
            if closing is not None:
                self._shutdown(closing, completions)
                self._post(completions, self._snapshot(), alarms)
                return
            self._post(completions, self._snapshot(), alarms)

    def _handle(self, op: Op, completions: list[Completion], alarms: list[tuple[str, str]]) -> Close | None:
        if isinstance(op, Insert):
            self._insert(op)
        elif isinstance(op, PutState):
            self._states.append((op, op.state))
            self._batch_ops += 1
        elif isinstance(op, Burst):
            # one operation, so all of it joins the same batch: the commit comes after it, never inside
            for ins in op.inserts:
                self._insert(ins)
            if op.state is not None:
                self._states.append((op.state, op.state.state))
                self._batch_ops += 1
        elif isinstance(op, Ack):
            # Only rows leased in this run are acked: an id from an earlier lease that was
            # released, or from before a file replacement, must not delete anything.
            for i in op.ids:
                info = self._leased.pop(i, None)
                if info is not None and i not in self._deleting:
                    self._deleting[i] = info[0]
                    self._acks.append(i)
            self._batch_ops += 1
        elif isinstance(op, Release):
            for i in op.ids:
                self._leased.pop(i, None)
        elif isinstance(op, Reserve):
            self._reserve_hi = op.hi
            self._seq_hi = max(self._seq_hi, op.hi)
            self._save_floor(op.hi)  # before the commit that reserves it
            self._batch_ops += 1
        elif isinstance(op, Lease):
            try:
                completions.append((op.future, None, self._lease(op.limit, alarms)))
            except sqlite3.Error as e:
                completions.append((op.future, *self._read_failed(e, alarms, [])))
        elif isinstance(op, LoadState):
            # read-your-writes: commit what is queued first (load_state is a start-up call)
            if self._batch_ops:
                self._commit(completions, alarms)
            try:
                completions.append((op.future, None, self._load_state(op.prefix)))
            except sqlite3.Error as e:
                completions.append((op.future, *self._read_failed(e, alarms, {})))
        else:
            return op
        return None

    def _insert(self, op: Insert) -> None:
        self._inserts.append(op)
        if op.state:
            self._states.append((op, op.state))
        self._batch_ops += 1

    def _read_failed(self, e: sqlite3.Error, alarms: list[tuple[str, str]],
                     empty: object) -> tuple[OutboxError | None, object]:
        """(error, result) for a failed read; a damaged file is replaced and the read answered
        from the empty replacement."""
        if schema.is_corruption(e):
            self._recover(e, alarms)
            return None, empty
        log.error("outbox_read_failed", error=str(e))
        return OutboxError(f"outbox read failed: {e}"), None

    def _recover(self, e: BaseException, alarms: list[tuple[str, str]]) -> None:
        """The file went bad while open: repair it in place, or move it aside and carry on with a
        fresh one holding every row that could be read from it (``salvage``).

        Salvaged records keep their ids, keys and payloads; the counters and the key reservation
        move over so keys keep increasing.  Leases are void: a PUBACK for a row leased from the
        damaged file is ignored and the row is sent again under its own key.  Rows on damaged pages
        stay in the file moved aside.  If even this fails the writer stops, every waiter hears
        OutboxClosed, and the next start recovers at open time.
        """
        old = self._conn
        self._conn = None
        if old is not None:
            with contextlib.suppress(sqlite3.Error):
                old.close()
        if salvage.repair_in_place(self._s.path):
            with contextlib.suppress(sqlite3.DatabaseError, schema.CorruptDatabase):
                # the same file, the same rows: leases and bookkeeping stay valid
                self._conn = schema.connect(self._s.path, max_db_bytes=self._s.max_db_bytes)
                return
        stranded = sum(self._totals.values())
        moved = schema.move_aside(self._s.path)
        conn = schema.connect(self._s.path, max_db_bytes=self._s.max_db_bytes)
        self._conn = conn
        got = salvage.copy_rows(moved, conn)
        self._counters.leased = {}
        self._sealing.new_file()  # the chain carries over; the nonce salt does not
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)",
            [("seq_hi", str(self._seq_hi)), ("counters", self._counters.to_json()), *self._sealing.meta_rows()],
        )
        # A PUBACK of a row leased from the damaged file may still arrive: the new file's ids
        # continue above every id ever leased (and every salvaged id), so that ack cannot match
        # (and delete) a new row.
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox'")
        conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES "
                     "('outbox', max(?, (SELECT coalesce(max(id), 0) FROM outbox)))", (self._id_hi,))
        conn.execute("COMMIT")
        self._leased.clear()
        self._deleting.clear()
        self._acks.clear()
        self._totals = schema.class_totals(conn)
        self._oldest = schema.oldest_created(conn)
        self._db_bytes = schema.file_bytes(self._s.path)
        detail = (f"{self._s.path} damaged while running ({e}); moved to {moved.name} with "
                  f"{stranded} undelivered records: {got.summary()} into a fresh outbox")
        log.error("outbox_corrupt", path=str(self._s.path), moved_to=str(moved), stranded=stranded,
                  salvaged=got.records, lost=got.records_lost, error=str(e))
        self._episode(alarms, "outbox_corrupt", detail)

    def _shutdown(self, closing: Close, completions: list[Completion]) -> None:
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.close()  # the last connection checkpoints the WAL into the main file
        self._db_bytes = schema.file_bytes(self._s.path)
        log.info("outbox_closed", pending=sum(self._totals.values()), commits=self._counters.commits)
        completions.append((closing.future, None, None))

    def _fail_everything(self, e: BaseException) -> None:
        err = OutboxClosed(f"outbox writer stopped: {e}")
        with self._cond:
            self._accepting = False
            ops, self._queue = self._queue, []
        waiting: list[Fut] = [*self._committing, *(i.future for i in self._inserts)]
        waiting += [src.future for src, _ in self._states if isinstance(src, PutState)]
        for op in ops:
            if isinstance(op, Insert | PutState | Lease | LoadState | Close):
                waiting.append(op.future)
            elif isinstance(op, Burst):
                waiting += [i.future for i in op.inserts]
                if op.state is not None:
                    waiting.append(op.state.future)
        self._post([(f, err, None) for f in waiting], None, [("outbox_failed", str(e))])

    # ---- reads --------------------------------------------------------------------------

    def _conn_(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxClosed("the outbox is closed")
        return self._conn

    def _excluded_counts(self) -> dict[RecordKind, int]:
        excl = dict.fromkeys(RecordKind, 0)
        for kind, _ in self._leased.values():
            excl[kind] += 1
        for dkind in self._deleting.values():
            excl[dkind] += 1
        return excl

    def _lease(self, limit: int, alarms: list[tuple[str, str]]) -> list[PendingRow]:
        if limit <= 0:
            return []
        conn = self._conn_()
        excl = self._excluded_counts()
        backlog = {k: Backlog(self._totals[k] - excl[k], self._oldest[k]) for k in RecordKind}
        if not any(b.available > 0 for b in backlog.values()):
            return []
        self._lease_batches += 1
        now, policy = self._s.clock(), self._s.lease_policy
        shares = lease_shares(limit, backlog, now=now, batch_no=self._lease_batches, policy=policy,
                              turn=self._starving_turn)
        if starving_classes(backlog, now=now, batch_no=self._lease_batches, policy=policy):
            self._starving_turn += 1
        out: list[PendingRow] = []
        for kind in CLASS_ORDER:
            want = shares[kind]
            if want <= 0:
                continue
            # rows of the class already leased or being deleted are skipped, so fetch that many more
            cur = conn.execute(
                "SELECT id, key, patient, seq, created, payload, chain_n FROM outbox WHERE kind = ? "
                "ORDER BY seq LIMIT ?",
                (kind.value, want + excl[kind]),
            )
            got = 0
            for row_id, key, patient, seq, created, payload, chain_n in cur:
                if row_id in self._leased or row_id in self._deleting:
                    continue
                opened = self._sealing.open_row(key, patient, bytes(payload), chain_n)
                self._leased[row_id] = (kind, key)  # an unreadable row stays parked here, never sent
                self._id_hi = max(self._id_hi, row_id)
                if opened is None:
                    self._episode(alarms, "outbox_row_unreadable",
                                  f"outbox row {row_id} failed authentication (damaged or altered); kept, not sent "
                                  "(`iomt-gateway outbox --check` lists every such row)")
                    continue
                out.append(PendingRow(row_id, kind, opened[0], opened[1], seq, opened[2], created))
                got += 1
                if got >= want:
                    break
            cur.close()
        return out

    def _load_state(self, prefix: str) -> dict[str, bytes]:
        return self._sealing.load_state(self._conn_(), prefix)

    # ---- the group commit ---------------------------------------------------------------

    def _commit(self, completions: list[Completion], alarms: list[tuple[str, str]], *,
                _retry: bool = False) -> None:
        inserts, states, acks = self._inserts, self._states, self._acks
        reserve_hi = self._reserve_hi
        n_ops = self._batch_ops
        self._inserts, self._states, self._acks, self._batch_ops = [], [], [], 0
        self._committing = [op.future for op in inserts]
        self._committing += [src.future for src, _ in states if isinstance(src, PutState)]
        self._last_commit = time.monotonic()
        conn = self._conn_()
        try:
            free = self._s.free_bytes(self._s.path.parent)
        except OSError as e:
            log.warning("outbox_free_space_unknown", error=str(e))
            free = self._s.min_free_bytes  # unknown: do not refuse on a failed measurement
        below_floor = free < self._s.min_free_bytes
        prune = self._s.monotonic() - self._last_prune >= _PRUNE_EVERY_S
        try:
            conn.execute("BEGIN IMMEDIATE")
            eff = txn.write_batch(conn, self._book(self._s.clock()), inserts, states, acks, reserve_hi,
                                  below_floor=below_floor, prune=prune)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as e:
            self._rollback(conn)
            if schema.is_corruption(e) and not _retry:
                # the batch is still in memory: nothing submitted since the last commit is lost
                self._recover(e, alarms)
                self._inserts = inserts + self._inserts
                self._states = states + self._states
                self._batch_ops += n_ops
                self._commit(completions, alarms, _retry=True)
                return
            self._commit_failed(e, completions, alarms, inserts, states, acks, reserve_hi, n_ops)
            return
        if prune:
            self._last_prune = self._s.monotonic()
        with self._cond:
            self._queued_writes -= n_ops
        self._applied(eff, acks, reserve_hi)
        if not eff.refused:
            completions.extend([(op.future, None, None) for op in inserts])
        else:
            refused = {id(op) for op in eff.refused}
            for op in inserts:
                if id(op) in refused:
                    completions.append((op.future, OutboxFull(self._refusal_detail(op.kind)), None))
                else:
                    completions.append((op.future, None, None))
        for src, _ in states:
            if isinstance(src, PutState):
                completions.append((src.future, None, None))
        if eff.refused:
            kinds = sorted({op.kind.value for op in eff.refused})
            log.warning("outbox_refused", count=len(eff.refused), kinds=kinds, below_floor=below_floor,
                        free_mb=free // 1_000_000, **{f"pending_{k.value}": self._totals[k] for k in _REFUSABLE})
            self._episode(alarms, "outbox_full", self._refusal_detail(eff.refused[0].kind))
        elif inserts and below_floor:
            self._episode(alarms, "outbox_full", f"free disk below {self._s.min_free_bytes // 2**20} MB: "
                          "evidence, summary and status records dropped, alarms and billing still stored")
        elif inserts and not below_floor and "outbox_full" in self._episodes:
            self._episodes.discard("outbox_full")
            log.info("outbox_full_cleared")
        self._log_drops(eff.dropped)

    def _refusal_detail(self, kind: RecordKind) -> str:
        # only a quota refuses a record here: below the disk floor alarms and billing are still taken
        quota = getattr(self._s.quotas, kind.value)
        return f"{kind.value} quota of {quota} pending records reached: new {kind.value} records refused"

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as e:
                log.error("outbox_rollback_failed", error=str(e))

    def _book(self, now: float) -> txn.Book:
        return txn.Book(self._s.quotas, self._sealing, self._totals, self._counters, self._leased,
                        self._deleting, now)

    def _applied(self, eff: txn.Effects, acks: Iterable[int], reserve_hi: int | None) -> None:
        """Bring the bookkeeping in step with the transaction that just committed."""
        # every acked id is settled now: its row is deleted (or was already gone)
        for row_id in acks:
            self._deleting.pop(row_id, None)
        if eff.totals is not None:
            self._totals = eff.totals
        if eff.counters is not None:
            self._counters = eff.counters
        if reserve_hi is not None and self._reserve_hi == reserve_hi:
            self._reserve_hi = None
        self._sealing.applied(eff.sealing)
        conn = self._conn_()
        self._oldest = schema.oldest_created(conn)
        self._db_bytes = schema.file_bytes(self._s.path)

    def _commit_failed(self, e: BaseException, completions: list[Completion], alarms: list[tuple[str, str]],
                       inserts: list[Insert], states: list[tuple[Insert | PutState, StateRows]],
                       acks: list[int], reserve_hi: int | None, n_ops: int) -> None:
        full = schema.is_disk_full(e)
        # one error line per episode; the alarm and the counters carry the rest
        quiet = bool(self._episodes & {"outbox_full", "outbox_corrupt", "outbox_write_failed"})
        (log.debug if quiet else log.error)(
            "outbox_commit_failed", error=str(e), disk_full=full, records=len(inserts)
        )
        if full:
            self._episode(alarms, "outbox_full", f"disk full while committing: {e}")
        elif schema.is_corruption(e):
            self._episode(alarms, "outbox_corrupt", f"commit failed: {e}")
        else:
            self._episode(alarms, "outbox_write_failed", f"commit failed: {e}")
        dropped = dict.fromkeys(RecordKind, 0)
        refused = 0
        for op in inserts:
            if full and op.kind not in _REFUSABLE:
                dropped[op.kind] += 1  # summaries/status: dropped and counted, producer not bothered
                completions.append((op.future, None, None))
            else:
                refused += 1
                err: OutboxError = OutboxFull(f"disk full: {e}") if full else OutboxError(f"commit failed: {e}")
                completions.append((op.future, err, None))
        self._counters.refused += refused
        for k, n in dropped.items():
            if n:
                self._counters.dropped[k.value] = self._counters.dropped.get(k.value, 0) + n
        self._log_drops(dropped)
        # Acks, bare state writes and the key reservation are retried without the records: deleting
        # rows frees room, and the reservation must precede any record that uses its numbers.
        bare = [(src, rows) for src, rows in states if isinstance(src, PutState)]
        retry_ok = False
        conn = self._conn_()
        if acks or bare or reserve_hi is not None:
            eff = txn.Effects()
            book = self._book(self._s.clock())
            try:
                conn.execute("BEGIN IMMEDIATE")
                if acks:
                    txn.delete_acked(conn, eff, acks, book.now)
                txn.write_state(conn, self._sealing, bare, set())
                eff.totals = dict(self._totals)
                for kind in eff.deleted.values():
                    eff.totals[kind] -= 1
                eff.counters = txn.next_counters(book, eff)
                meta = [("counters", eff.counters.to_json()), *self._sealing.meta_rows()]
                if reserve_hi is not None:
                    meta.append(("seq_hi", str(reserve_hi)))
                conn.executemany("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", meta)
                conn.execute("COMMIT")
                retry_ok = True
                self._applied(eff, acks, reserve_hi)
            except (sqlite3.Error, OSError) as e2:
                self._rollback(conn)
                (log.debug if quiet else log.error)("outbox_retry_failed", error=str(e2))
        for src, _ in bare:
            if isinstance(src, PutState):
                completions.append((src.future, None if retry_ok else OutboxFull(f"state not written: {e}"),
                                    None))
        requeued = 0
        if not retry_ok and (acks or reserve_hi is not None):
            self._acks = acks + self._acks
            requeued = 1
            self._batch_ops += 1
        with self._cond:
            self._queued_writes -= n_ops - requeued

    # ---- alarms and logs ----------------------------------------------------------------

    def _episode(self, alarms: list[tuple[str, str]], condition: str, detail: str) -> None:
        """Raise an alarm once per episode, not once per record."""
        if condition not in self._episodes:
            self._episodes.add(condition)
            alarms.append((condition, detail))

    def _log_drops(self, dropped: Mapping[RecordKind, int]) -> None:
        for k, n in dropped.items():
            self._drops_unlogged[k] += n
        if not any(self._drops_unlogged.values()):
            return
        now = self._s.monotonic()
        if now - self._drop_logged_at < _DROP_LOG_EVERY_S:
            return
        self._drop_logged_at = now
        log.warning("outbox_dropped", **{k.value: n for k, n in self._drops_unlogged.items() if n},
                    total=sum(self._counters.dropped.values()))
        self._drops_unlogged = dict.fromkeys(RecordKind, 0)

    # ---- snapshot -----------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        leased = dict.fromkeys(RecordKind, 0)
        for kind, _ in self._leased.values():
            leased[kind] += 1
        deleting = dict.fromkeys(RecordKind, 0)
        for dkind in self._deleting.values():
            deleting[dkind] += 1
        c = self._counters
        counters = schema.Counters(c.accepted, c.delivered, c.refused, c.commits, c.last_delivery,
                                   dict(c.dropped), {})
        return Snapshot(dict(self._totals), leased, deleting, dict(self._oldest), counters, self._db_bytes,
                        self._sealing.note)
