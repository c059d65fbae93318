"""A local copy of the latest evidence strips, kept in the outbox's state table.

Evidence records leave the outbox once the broker has them; so that ``iomt-gateway evidence``
can still show what tripped a recent alarm, the last ``KEEP`` strips ride along as state entries,
committed in the same transaction as the records (and sealed with them when the outbox is).
Keys sort by time: ``evidence/<start ms, 15 digits> <alarm id>``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from gateway.records import EvidenceRecord

EVIDENCE_STATE_PREFIX = "evidence/"
KEEP = 200


def state_key(record: EvidenceRecord) -> str:
    return f"{EVIDENCE_STATE_PREFIX}{int(record.start_time.timestamp() * 1000):015d} {record.alarm_id}"


def alarm_of(key: str) -> str:
    return key.removeprefix(EVIDENCE_STATE_PREFIX).split(" ", 1)[-1]


class EvidenceCopies:
    def __init__(self, existing: Iterable[str], keep: int = KEEP) -> None:
        self.keep = keep
        self._keys: deque[str] = deque(sorted(existing))

    def state_for(self, records: Sequence[object]) -> dict[str, bytes | None]:
        """State entries to commit with ``records``: new strips in, the oldest beyond ``keep`` out."""
        out: dict[str, bytes | None] = {}
        for r in records:
            if isinstance(r, EvidenceRecord):
                k = state_key(r)
                out[k] = r.model_dump_json().encode()
                self._keys.append(k)
        while len(self._keys) > self.keep:
            out[self._keys.popleft()] = None
        return out
