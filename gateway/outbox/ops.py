"""Messages between the event loop and the outbox writer thread, and what the loop sees.

The loop appends these operations to the writer's FIFO; the writer answers through futures that
belong to the loop (resolved there via ``call_soon_threadsafe``) and publishes an immutable
``Snapshot`` of its bookkeeping after every wake-up.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.models import QuotaSection
from gateway.keyring import Keyring
from gateway.outbox import schema
from gateway.outbox.policy import LeasePolicy
from gateway.records import RecordKind

Fut = asyncio.Future[Any]
Completion = tuple[Fut, BaseException | None, Any]
StateRows = Mapping[str, bytes | None]


# ---- operations queued by the loop ----------------------------------------------------------


@dataclass(slots=True)
class Insert:
    kind: RecordKind
    key: str
    patient: str
    seq: int
    payload: bytes
    created: float
    state: StateRows | None
    future: Fut
    # ``key`` is this gateway's ``<gateway>:<seq>`` (known on the loop from parsing ``seq``):
    # sealed rows store such keys as they are, without a MAC
    own_key: bool = False


@dataclass(slots=True)
class PutState:
    state: StateRows
    future: Fut


@dataclass(slots=True)
class Burst:
    """Records submitted together (``Outbox.submit_many``): the writer takes them in one go, so
    they and the state riding on the last always commit in the same transaction."""

    inserts: list[Insert]
    state: PutState | None = None  # the state, when the record it rode on was refused before queueing


@dataclass(slots=True)
class Ack:
    ids: tuple[int, ...]


@dataclass(slots=True)
class Release:
    ids: tuple[int, ...]


@dataclass(slots=True)
class Lease:
    limit: int
    future: Fut


@dataclass(slots=True)
class LoadState:
    prefix: str
    future: Fut


@dataclass(slots=True)
class Reserve:
    hi: int  # durable upper end of the key-sequence block now in use


@dataclass(slots=True)
class Close:
    future: Fut


Op = Insert | PutState | Burst | Ack | Release | Lease | LoadState | Reserve | Close


# ---- what the loop sees ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    totals: dict[RecordKind, int]  # rows stored per class
    leased: dict[RecordKind, int]
    deleting: dict[RecordKind, int]  # acked, delete not yet committed
    oldest: dict[RecordKind, float | None]
    counters: schema.Counters
    db_bytes: int
    checkpoint: str | None = None  # newest signed checkpoint note (sealed outboxes only)

    def available(self, kind: RecordKind) -> int:
        return max(0, self.totals[kind] - self.leased[kind] - self.deleting[kind])


@dataclass(frozen=True, slots=True)
class Opened:
    seq_start: int
    seq_limit: int
    snapshot: Snapshot


Post = Callable[[list[Completion], Snapshot | None, list[tuple[str, str]]], None]


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path
    quotas: QuotaSection
    min_free_bytes: int
    interval_s: float
    max_records: int
    free_bytes: Callable[[Path], int]
    clock: Callable[[], float]
    lease_policy: LeasePolicy
    max_db_bytes: int | None = None
    keyring: Keyring | None = None  # None: rows in clear, no chain (tests, benchmarks)
    gateway_id: str = ""
    quarantine_max_age_s: float | None = None  # damaged files moved aside are deleted after this
    # Elapsed time for the writer's bookkeeping timers (prune, drop log).  The group-commit pacing
    # stays on time.monotonic: it is paired with real waits on the writer thread's condition.
    monotonic: Callable[[], float] = time.monotonic


def statvfs_free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def state_rows(state: Mapping[str, bytes | None] | None) -> dict[str, bytes | None] | None:
    """A private copy of a state mapping, checked at the producer (a bad value is its bug)."""
    if not state:
        return None
    out: dict[str, bytes | None] = {}
    for k, v in state.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, bytes | bytearray | memoryview)):
            raise TypeError("state must map str keys to bytes or None")
        out[k] = None if v is None else bytes(v)
    return out


def ids_tuple(ids: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in ids)
