"""The outbox as the event loop sees it: non-blocking calls, futures resolved by the writer.

``submit`` is accepted when its group commit is on disk (``synchronous=FULL``); ``lease`` hands
out committed rows in priority order; ``ack`` (PUBACK) deletes them in a later group commit, and
``release`` (publish failed or timed out: outcome unknown) makes them pending again, same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from gateway import chain, mqtt_limits
from gateway.config.models import QuotaSection
from gateway.keyring import Keyring
from gateway.outbox import schema
from gateway.outbox.audit import AuditReport, check_rows
from gateway.outbox.keys import SeqCounter, format_key, parse_seq
from gateway.outbox.ops import (
    Ack,
    Burst,
    Close,
    Completion,
    Insert,
    Lease,
    LoadState,
    PutState,
    Release,
    Reserve,
    Settings,
    Snapshot,
    ids_tuple,
    state_rows,
    statvfs_free_bytes,
)
from gateway.outbox.policy import LeasePolicy
from gateway.outbox.sealing import RowSealing
from gateway.outbox.types import (
    AlarmHook,
    ClassStats,
    OutboxClosed,
    OutboxError,
    OutboxStats,
    PendingRow,
    Record,
    RecordTooLarge,
)
from gateway.outbox.writer import Writer
from gateway.records import RecordKind

log = structlog.get_logger()


class Outbox:
    """Durable store-and-forward queue of outbound records. Create with ``await Outbox.open(...)``."""

    def __init__(self, *, _settings: Settings, _gateway_id: str, _on_alarm: AlarmHook | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._writer = Writer(_settings, self._loop, self._on_writer)
        self._gateway_id = _gateway_id
        self._clock = _settings.clock
        self._on_alarm = _on_alarm
        self._snapshot: Snapshot | None = None
        self._pending = asyncio.Event()
        self._closed = False
        self._close_done: asyncio.Future[None] | None = None
        self._counter: SeqCounter | None = None
        self._max_record_bytes = mqtt_limits.MAX_RECORD_BYTES
        self._too_large = 0

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        gateway_id: str,
        quotas: QuotaSection = QuotaSection(),  # noqa: B008 - frozen model, safe as a default
        min_free_mb: int = 64,
        commit_interval_ms: int = 200,
        commit_max_records: int = 2000,
        on_alarm: AlarmHook | None = None,
        free_bytes: Callable[[Path], int] = statvfs_free_bytes,
        max_db_bytes: int | None = None,
        lease_policy: LeasePolicy = LeasePolicy(),  # noqa: B008 - frozen dataclass
        clock: Callable[[], float] = time.time,
        max_record_bytes: int = mqtt_limits.MAX_RECORD_BYTES,
        keyring: Keyring | None = None,
        quarantine_days: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Outbox:
        """Open (creating, migrating or — if damaged — replacing) the outbox at ``path``.

        ``free_bytes(folder)`` measures free disk space (injectable for tests); ``max_db_bytes``
        is an optional hard cap on the file (SQLite then fails writes with SQLITE_FULL, handled
        like a full disk); ``clock`` gives Unix time for ``created`` and ages, ``monotonic`` elapsed
        time for the writer's rate limits (prune, drop log).  A record whose JSON
        is larger than ``max_record_bytes`` is refused (``RecordTooLarge``, technical alarm
        ``record_too_large``).

        With a ``keyring`` every record and state row is stored sealed (AES-256-GCM) and every
        record is chained and checkpointed (``gateway.chain``, ``gateway.checkpoint``); leased
        payloads then carry their chain member.  A file sealed under other keys raises
        OutboxKeyError and is left untouched.  Damaged files moved aside are deleted once older
        than ``quarantine_days`` (kept forever when None).
        """
        if commit_interval_ms < 1 or commit_max_records < 1:
            raise ValueError("commit_interval_ms and commit_max_records must be >= 1")
        settings = Settings(
            path=Path(path),
            quotas=quotas,
            min_free_bytes=min_free_mb * 1024 * 1024,
            interval_s=commit_interval_ms / 1000.0,
            max_records=commit_max_records,
            free_bytes=free_bytes,
            clock=clock,
            lease_policy=lease_policy,
            max_db_bytes=max_db_bytes,
            keyring=keyring,
            gateway_id=gateway_id,
            quarantine_max_age_s=None if quarantine_days is None else quarantine_days * 86_400.0,
            monotonic=monotonic,
        )
        box = cls(_settings=settings, _gateway_id=gateway_id, _on_alarm=on_alarm)
        # what is published is the record plus its chain member: keep the sum within the limit
        box._max_record_bytes = max_record_bytes - (chain.MEMBER_MAX_BYTES if keyring is not None else 0)
        opened = await box._writer.start()
        box._snapshot = opened.snapshot
        box._counter = SeqCounter(opened.seq_start, opened.seq_limit, box._reserve)
        box._update_pending(opened.snapshot)
        return box

    # ---- producers ----------------------------------------------------------------------

    def next_key(self) -> str:
        """A fresh idempotency key ``<gateway_id>:<seq>``; strictly increasing across restarts."""
        return format_key(self._gateway_id, self._next_seq())

    def submit(self, record: Record, *, state: Mapping[str, bytes | None] | None = None) -> asyncio.Future[None]:
        """Queue ``record`` (and ``state`` rows, same transaction) for the next group commit.

        The future resolves once committed (accepted), or fails with OutboxFull / OutboxClosed.
        A key already stored, or a billing key delivered recently, is accepted as a no-op.
        Cancelling the future does not withdraw the record.
        """
        fut: asyncio.Future[None] = self._loop.create_future()
        if self._closed:
            fut.set_exception(OutboxClosed("the outbox is closed"))
            return fut
        rows = None if state is None else state_rows(state)
        op = self._insert(record, rows, fut)
        if op is None:
            if rows:  # the state that rode with it is still the producer's truth: keep it
                with contextlib.suppress(OutboxClosed):  # only if the writer died: the close reports it
                    self._writer.put(self._kept_state(rows), write=True)
            return fut
        try:
            self._writer.put(op, write=True)
        except OutboxClosed as e:
            fut.set_exception(e)
        return fut

    def submit_many(
        self, records: Sequence[Record], *, state: Mapping[str, bytes | None] | None = None
    ) -> list[asyncio.Future[None]]:
        """``submit`` for records made together, ``state`` riding with the last: one future per
        record, in order.  The writer takes the burst as one operation, so the records and the
        state always commit in the same transaction (a crash keeps all or none of them; it never
        keeps records without the state that made them, which would make them again under new
        keys).  Each record is still accepted or refused on its own, as by ``submit``.
        """
        futs: list[asyncio.Future[None]] = [self._loop.create_future() for _ in records]
        if not records:
            return [self.submit_state(state)] if state else []
        if self._closed:
            for f in futs:
                f.set_exception(OutboxClosed("the outbox is closed"))
            return futs
        rows = None if state is None else state_rows(state)
        last = len(records) - 1
        inserts: list[Insert] = []
        kept: PutState | None = None
        for i, (record, fut) in enumerate(zip(records, futs, strict=True)):
            op = self._insert(record, rows if i == last else None, fut)
            if op is not None:
                inserts.append(op)
            elif i == last and rows:
                kept = self._kept_state(rows)
        if not inserts and kept is None:
            return futs
        try:
            self._writer.put(Burst(inserts, kept), write=True)
        except OutboxClosed as e:
            for op in inserts:
                op.future.set_exception(e)
        return futs

    def _insert(self, record: Record, rows: dict[str, bytes | None] | None, fut: asyncio.Future[None]) -> Insert | None:
        """The writer's operation for ``record``; None when it is refused here (``fut`` says why)."""
        kind: RecordKind = record.kind
        if kind.__class__ is not RecordKind:  # a model built without validation may carry the value
            kind = RecordKind(kind)
        seq = parse_seq(self._gateway_id, record.key)
        own_key = seq is not None
        if seq is None:  # a service key (billing): order it by when it was queued
            seq = self._next_seq()
        # the model's serializer straight to bytes: model_dump_json's bytes, without its str round trip
        payload = record.__pydantic_serializer__.to_json(record)
        problem = mqtt_limits.record_size_problem(len(payload), self._max_record_bytes)
        if problem is not None:
            self._refuse_too_large(record, problem, fut)
            return None
        return Insert(kind, record.key, record.patient, seq, payload, self._clock(), rows, fut, own_key)

    def _refuse_too_large(self, record: Record, problem: str, fut: asyncio.Future[None]) -> None:
        self._too_large += 1
        detail = f"{record.kind} {record.key} (patient {record.patient}): {problem}"
        fut.set_exception(RecordTooLarge(detail))
        _raise_alarms(self._on_alarm, [("record_too_large", detail)])

    def _kept_state(self, rows: dict[str, bytes | None]) -> PutState:
        """The state that rode with a record refused as too large, written on its own."""
        kept: asyncio.Future[None] = self._loop.create_future()
        kept.add_done_callback(_log_state_failure)
        return PutState(rows, kept)

    async def accept(self, record: Record, *, state: Mapping[str, bytes | None] | None = None) -> None:
        await self.submit(record, state=state)

    def submit_state(self, state: Mapping[str, bytes | None]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        rows = state_rows(state)
        if not rows:
            fut.set_result(None)
            return fut
        try:
            self._writer.put(PutState(rows, fut), write=True)
        except OutboxClosed as e:
            fut.set_exception(e)
        return fut

    async def load_state(self, prefix: str) -> dict[str, bytes]:
        fut: asyncio.Future[dict[str, bytes]] = self._loop.create_future()
        self._writer.put(LoadState(prefix, fut), urgent=True)
        return await fut

    # ---- the uplink ---------------------------------------------------------------------

    async def wait_pending(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - agreed API
        """True as soon as at least one row may be leased; False after ``timeout`` seconds."""
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        if self._pending.is_set():
            return True
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that comes
            # with a record (CPython gh-86296), and the uplink's publisher then never stopped.
            async with asyncio.timeout(timeout):
                await self._pending.wait()
        except TimeoutError:
            return False
        if self._closed:  # woken by close() or by the writer's death, not by a record
            raise OutboxClosed("the outbox is closed")
        return True

    async def lease(self, limit: int) -> list[PendingRow]:
        """Up to ``limit`` committed rows, priority order with a starvation guard; [] if none."""
        if limit <= 0:
            return []
        fut: asyncio.Future[list[PendingRow]] = self._loop.create_future()
        self._writer.put(Lease(limit, fut), urgent=True)
        return await fut

    async def ack(self, ids: Sequence[int]) -> None:
        """Delivered (PUBACK): the rows are never leased again and are deleted in the next commit."""
        if ids:
            self._writer.put(Ack(ids_tuple(ids)), write=True)

    async def release(self, ids: Sequence[int]) -> None:
        """Publish failed or timed out: the rows become pending again with the same key."""
        if ids:
            self._writer.put(Release(ids_tuple(ids)), urgent=True)

    # ---- observation and shutdown -------------------------------------------------------

    def checkpoint(self) -> str | None:
        """The newest signed checkpoint note of the record chain (None without a keyring)."""
        snap = self._snapshot
        return None if snap is None else snap.checkpoint

    def stats(self) -> OutboxStats:
        snap = self._snapshot
        if snap is None:
            raise OutboxError("the outbox is not open")
        now = self._clock()
        classes = {
            k: ClassStats(
                pending=snap.available(k),
                leased=snap.leased[k],
                oldest_pending_age_s=None if snap.oldest[k] is None else max(0.0, now - snap.oldest[k]),  # type: ignore[operator]
                dropped=snap.counters.dropped.get(k.value, 0),
            )
            for k in RecordKind
        }
        c = snap.counters
        return OutboxStats(classes, c.accepted, c.delivered, c.refused, c.last_delivery, c.commits,
                           snap.db_bytes, self._too_large)

    async def close(self) -> None:
        """Commit everything queued (records, state, acks), then close. Idempotent."""
        if self._close_done is None:
            self._closed = True
            self._close_done = self._loop.create_future()
            try:
                self._writer.put(Close(self._close_done))
            except OutboxClosed:
                self._close_done.set_result(None)  # the writer already stopped
        self._pending.set()  # wake anyone in wait_pending so they notice the close
        await asyncio.shield(self._close_done)
        await self._writer.join()

    @staticmethod
    def inspect(path: Path) -> OutboxStats:
        """Read-only figures from the file, safe while the daemon runs (WAL readers do not block)."""
        conn = _read_only(path)
        try:
            totals = schema.class_totals(conn)
            oldest = schema.oldest_created(conn)
            c = schema.Counters.from_json(schema.read_meta(conn, "counters"))
        except sqlite3.Error as e:
            raise OutboxError(f"cannot read {path}: {e}") from e
        finally:
            conn.close()
        now = time.time()
        classes = {}
        for k in RecordKind:
            leased = min(totals[k], c.leased.get(k.value, 0))
            age = oldest[k]
            classes[k] = ClassStats(totals[k] - leased, leased, None if age is None else max(0.0, now - age),
                                    c.dropped.get(k.value, 0))
        return OutboxStats(classes, c.accepted, c.delivered, c.refused, c.last_delivery, c.commits,
                           schema.file_bytes(Path(path)))

    @staticmethod
    def read_state(path: Path, prefix: str, *, keyring: Keyring | None = None) -> dict[str, bytes]:
        """Read-only ``load_state`` for command-line tools, safe while the daemon runs."""
        conn = _read_only(path)
        try:
            sealing = RowSealing.create(keyring, "")
            sealing.adopt(lambda name: schema.read_meta(conn, name))
            return sealing.load_state(conn, prefix)
        except sqlite3.Error as e:
            raise OutboxError(f"cannot read {path}: {e}") from e
        finally:
            conn.close()

    @staticmethod
    def audit(path: Path, *, keyring: Keyring | None) -> AuditReport:
        """Open every row of the file (gateway/outbox/audit.py); read-only, safe while the daemon runs.
        Raises OutboxKeyError for a keyring that is not the file's (or none for a sealed file)."""
        conn = _read_only(path)
        try:
            sealing = RowSealing.create(keyring, "")
            sealing.adopt(lambda name: schema.read_meta(conn, name))
            return check_rows(conn, sealing.sealer)
        except sqlite3.Error as e:
            raise OutboxError(f"cannot read {path}: {e}") from e
        finally:
            conn.close()

    @staticmethod
    def key_ids(path: Path) -> list[int]:
        """AEAD key ids the file's sealed rows use (empty for a file in clear)."""
        conn = _read_only(path)
        try:
            raw = schema.read_meta(conn, "crypto")
        except sqlite3.Error as e:
            raise OutboxError(f"cannot read {path}: {e}") from e
        finally:
            conn.close()
        return [] if raw is None else [int(k) for k in json.loads(raw).get("kids", [])]

    # ---- internals ----------------------------------------------------------------------

    def _next_seq(self) -> int:
        if self._counter is None:
            raise OutboxError("the outbox is not open")
        return self._counter.next()

    def _reserve(self, hi: int) -> None:
        self._writer.put(Reserve(hi), write=True)

    def _on_writer(self, completions: list[Completion], snapshot: Snapshot | None,
                   alarms: list[tuple[str, str]]) -> None:
        if snapshot is not None:
            self._snapshot = snapshot
            self._update_pending(snapshot)
        elif self._writer.stopped and not self._closed:
            self._closed = True  # the writer died: wake waiters so they hear OutboxClosed
            self._pending.set()
        _settle(completions)
        if alarms and self._on_alarm is not None:
            _raise_alarms(self._on_alarm, alarms)
        elif alarms:
            for condition, detail in alarms:
                log.warning("outbox_alarm_unhandled", condition=condition, detail=detail)

    def _update_pending(self, snapshot: Snapshot) -> None:
        if any(snapshot.available(k) for k in RecordKind):
            self._pending.set()
        else:
            self._pending.clear()


def _read_only(path: Path) -> sqlite3.Connection:
    if not Path(path).exists():  # mode=ro would not create it, but say so plainly
        raise OutboxError(f"no outbox database at {path}")
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        return sqlite3.connect(uri, uri=True, timeout=5.0)
    except sqlite3.Error as e:
        raise OutboxError(f"cannot open {path}: {e}") from e


def _settle(completions: list[Completion]) -> None:
    for fut, exc, result in completions:
        if fut.done():  # cancelled by its waiter: the outcome has nobody to go to
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


def _log_state_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("outbox_state_not_written", error=repr(fut.exception()))


def _raise_alarms(hook: AlarmHook | None, alarms: list[tuple[str, str]]) -> None:
    for condition, detail in alarms:
        log.warning("outbox_alarm", condition=condition, detail=detail)
        if hook is None:
            continue
        try:
            hook(condition, detail)
        except Exception:
            log.exception("outbox_alarm_hook_failed", condition=condition)


__all__ = ["Outbox"]
