"""A read-only check of every sealed row of an outbox file (``iomt-gateway outbox --check``).

The daemon meets a row that fails authentication only when it leases it: it parks the row (never
sends it) and raises ``outbox_row_unreadable`` once per episode.  This check opens every row with
the keyring, so a technician or an auditor can see *which* rows are affected and decide what to do
(a damaged card, an altered file), without waiting for the uplink to reach them:

* records and state rows that fail AES-GCM authentication (damaged or altered bytes, a row's blob
  moved to another row: its identity is in the authenticated data) or whose plaintext is malformed;
* records whose key id the keyring does not hold;
* the chain inside the file: for pending records at consecutive positions ``n`` and ``n + 1``, the
  second one's stored previous link must be ``link(prev_n, record n)`` (a record replaced by another
  that authenticates — only possible with the key — still breaks it).

Rows in clear (written before the keyring was turned on) are counted, not judged.  Safe while the
daemon runs (a WAL reader).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from gateway import chain
from gateway.outbox.crypto import KeyMismatch, RowUnreadable, Sealer, is_sealed


@dataclass(frozen=True)
class BadRow:
    table: str  # "outbox" or "state"
    row: str  # the outbox row id, or the state row's stored identity
    kind: str  # record class ("" for a state row)
    created: float | None
    reason: str


@dataclass
class AuditReport:
    records: int = 0
    states: int = 0
    in_clear: int = 0
    bad: list[BadRow] = field(default_factory=list)
    chain_breaks: list[int] = field(default_factory=list)  # positions n whose successor does not link

    @property
    def ok(self) -> bool:
        return not self.bad and not self.chain_breaks


def check_rows(conn: sqlite3.Connection, sealer: Sealer | None) -> AuditReport:
    """Open every row of ``conn``'s outbox with ``sealer``, already checked against the file
    (``RowSealing.adopt``); None for a file written without a keyring."""
    report = AuditReport()
    links: dict[int, tuple[bytes, bytes]] = {}  # chain position -> (previous link, canonical record bytes)
    for row_id, kind, key, created, blob, chain_n in conn.execute(
        "SELECT id, kind, key, created, payload, chain_n FROM outbox ORDER BY id"
    ):
        report.records += 1
        value = bytes(blob)
        if sealer is None or not is_sealed(value):
            report.in_clear += 1
            continue
        try:
            opened = sealer.open_record(str(key), value)
        except (RowUnreadable, KeyMismatch) as e:
            report.bad.append(BadRow("outbox", str(row_id), str(kind), float(created), str(e)))
            continue
        if chain_n is not None and opened.prev is not None:
            links[int(chain_n)] = (opened.prev, opened.payload)
    for n, (prev, payload) in sorted(links.items()):
        following = links.get(n + 1)
        if following is not None and following[0] != chain.link(prev, payload):
            report.chain_breaks.append(n)
    for ident, blob in conn.execute("SELECT key, value FROM state ORDER BY key"):
        report.states += 1
        value = bytes(blob)
        if sealer is None or not is_sealed(value):
            report.in_clear += 1
            continue
        try:
            sealer.open_state(str(ident), value)
        except (RowUnreadable, KeyMismatch) as e:
            report.bad.append(BadRow("state", str(ident), "", None, str(e)))
    return report
