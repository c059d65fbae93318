"""Public value types and errors of the outbox (no SQL, no threads)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.records import AlarmRecord, BillingRecord, DeviceStatusRecord, EvidenceRecord, RecordKind, SummaryRecord

Record = SummaryRecord | AlarmRecord | DeviceStatusRecord | BillingRecord | EvidenceRecord

AlarmHook = Callable[[str, str], None]
"""``(condition, detail)``, e.g. ``("outbox_full", "...")`` or ``("outbox_corrupt", "...")``."""


class OutboxError(Exception):
    """Base of every error the outbox raises to its callers."""

    retryable = False


class OutboxFull(OutboxError):
    """A billing or alarm record could not be taken: quota, free-disk floor or a full disk.

    The producer keeps the record and tries again later; nothing was written.
    """

    retryable = True


class RecordTooLarge(OutboxError):
    """The record's JSON is larger than the configured maximum (``upstream.max_record_bytes``).

    Some brokers refuse such a message (AWS IoT Core above 128 KB): stored, it would be resent
    after every reconnect and never delivered.  Nothing was written; the outbox raised the
    ``record_too_large`` technical alarm.
    """


class OutboxTooNew(OutboxError):
    """The file was written by a newer version in a format this version cannot read.

    Nothing is moved or changed: the fix is to run that newer version (or newer) again.
    """

    def __init__(
        self, path: str, *, file_format: int, min_reader: int, reads_up_to: int, written_by: str | None
    ) -> None:
        from gateway import __version__  # noqa: PLC0415

        self.file_format = file_format
        self.min_reader = min_reader
        self.reads_up_to = reads_up_to
        writer = f"iomt-gateway {written_by}" if written_by else "a newer iomt-gateway"
        fix = f"iomt-gateway {written_by} or newer" if written_by else "the newer version"
        super().__init__(
            f"outbox {path} was written by {writer} (outbox format {file_format}, readable by format "
            f"{min_reader} and later); this is iomt-gateway {__version__}, which reads formats up to "
            f"{reads_up_to}. Install {fix} again: the file is left untouched, with every pending record in it."
        )


class OutboxKeyError(OutboxError):
    """The keyring is missing, wrong or lacks a key the file uses; the file was left untouched."""


class OutboxClosed(OutboxError):
    """The outbox was closed (or its writer stopped) before the request could be served."""


@dataclass(frozen=True)
class PendingRow:
    id: int
    kind: RecordKind
    key: str
    patient: str
    seq: int
    payload: bytes
    created: float  # Unix seconds when the record was submitted


@dataclass(frozen=True)
class ClassStats:
    pending: int
    leased: int
    oldest_pending_age_s: float | None  # oldest undelivered row of the class (pending or leased)
    dropped: int


@dataclass(frozen=True)
class OutboxStats:
    classes: dict[RecordKind, ClassStats]
    accepted: int
    delivered: int
    refused: int
    last_delivery: float | None
    commits: int
    db_bytes: int
    too_large: int = 0  # records refused since this process opened the outbox: larger than the maximum

    @property
    def depth(self) -> int:
        """Records stored and not yet acknowledged (pending plus leased)."""
        return sum(c.pending + c.leased for c in self.classes.values())
