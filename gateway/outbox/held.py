"""Records the outbox refused for now, kept by their producer to be submitted again.

The outbox refuses an alarm or a billing record with ``OutboxFull`` (retryable) when its class is
at its quota or the disk is full; it never drops one.  The producer must then keep the record and
try again, or it is lost after all.  ``HeldRecords`` is that keeping for the daemon's records
(the billing ledger keeps its own): in submission order, bounded so that an outbox full for days
cannot exhaust the hub's memory, and any record it has to give up is counted and returned for the
caller to log.  No SQL, no event loop: a plain queue.
"""

from __future__ import annotations

from collections import deque

from gateway.outbox.txn import NEVER_DROPPED
from gateway.outbox.types import OutboxError, Record

MAX_HELD = 10_000  # alarms wait in memory at most this many; beyond, the oldest held is given up


class HeldRecords:
    """Refused alarm and billing records, oldest first, until ``take`` hands them back."""

    def __init__(self, limit: int = MAX_HELD) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
        self._q: deque[Record] = deque()
        self._known: set[str] = set()  # keys held and not yet settled: refused again is no news
        self.lost = 0  # records given up because more than ``limit`` were held

    @staticmethod
    def keeps(record: Record, error: BaseException | None) -> bool:
        """Whether a record refused with ``error`` is worth keeping: an alarm or billing record
        refused for a passing reason (full quota, full disk), not for being invalid or too large."""
        return record.kind in NEVER_DROPPED and isinstance(error, OutboxError) and error.retryable

    def keep(self, record: Record) -> tuple[bool, Record | None]:
        """Hold ``record``: whether it is held for the first time (not a retry refused again), and
        the oldest held record if it had to be given up to make room."""
        first = record.key not in self._known
        self._known.add(record.key)
        self._q.append(record)
        if len(self._q) <= self._limit:
            return first, None
        self.lost += 1
        given_up = self._q.popleft()
        self._known.discard(given_up.key)
        return first, given_up

    def settled(self, key: str) -> None:
        """The record with ``key`` was accepted (or is given up by the caller): no longer held."""
        self._known.discard(key)

    def take(self) -> list[Record]:
        """Every held record, oldest first; the queue is then empty."""
        out = list(self._q)
        self._q.clear()
        return out

    def __len__(self) -> int:
        return len(self._q)
