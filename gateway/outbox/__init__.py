"""Durable store-and-forward outbox (SQLite, WAL, one writer thread, group commits).

Records are *accepted* once committed to disk and *delivered* once the broker acknowledged them
(``ack``); in between they survive crashes and power cuts.  See ``api.Outbox``.
"""

from gateway.outbox.api import Outbox
from gateway.outbox.held import HeldRecords
from gateway.outbox.policy import LeasePolicy
from gateway.outbox.types import (
    AlarmHook,
    ClassStats,
    OutboxClosed,
    OutboxError,
    OutboxFull,
    OutboxKeyError,
    OutboxStats,
    OutboxTooNew,
    PendingRow,
    Record,
    RecordTooLarge,
)

__all__ = [
    "AlarmHook",
    "ClassStats",
    "HeldRecords",
    "LeasePolicy",
    "Outbox",
    "OutboxClosed",
    "OutboxError",
    "OutboxFull",
    "OutboxKeyError",
    "OutboxStats",
    "OutboxTooNew",
    "PendingRow",
    "Record",
    "RecordTooLarge",
]
