"""The writer's view of sealing: rows in clear or encrypted, the chain head, signed checkpoints.

Without a keyring (unit tests, the "off" side of the benchmark) rows are stored as given and
nothing is chained.  With one, every stored record and state row is sealed (``crypto.Sealer``),
every inserted record takes the next chain position in the writer transaction, and each
transaction that moved the chain signs a checkpoint.  The chain head and the checkpoint live in
the ``meta`` table and change only in the transaction that stores the records they cover.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from gateway import chain, checkpoint
from gateway.keyring import Keyring
from gateway.outbox.crypto import KeyMismatch, RowUnreadable, Sealer, is_sealed
from gateway.outbox.types import OutboxKeyError

log = structlog.get_logger()

# a file that was sealed once must never be opened without its keys
_SEALED_MARK = "key_check"


@dataclass(slots=True)
class SealTxn:
    """What one writer transaction does to the chain (kept only if it commits)."""

    head: chain.ChainHead
    note: str | None
    moved: bool = False


@dataclass
class _Signer:
    origin: str
    name: str
    public: bytes
    sign: Callable[[bytes], bytes]
    # after a signing-key rotation: the previous key, co-signing until ``cosign_until`` (Unix time)
    cosign: tuple[bytes, Callable[[bytes], bytes]] | None = None
    cosign_until: float = 0.0

    def note(self, text: str) -> str:
        data = text.encode()
        more = []
        if self.cosign is not None and time.time() < self.cosign_until:
            more.append((self.name, self.cosign[0], self.cosign[1](data)))
        return checkpoint.assemble(text, self.name, self.public, self.sign(data), *more)


@dataclass
class RowSealing:
    sealer: Sealer | None
    signer: _Signer | None
    gateway_id: str
    head: chain.ChainHead = field(default_factory=chain.ChainHead)
    note: str | None = None
    _idents: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._own_prefix = self.gateway_id + ":"

    @classmethod
    def create(cls, ring: Keyring | None, gateway_id: str) -> RowSealing:
        if ring is None:
            return cls(None, None, gateway_id)
        key = ring.signing_key()
        origin = checkpoint.origin_for(gateway_id)
        signer = _Signer(origin, origin, ring.public_key(), key.sign)
        if (previous := ring.cosigning_key()) is not None:
            old, signer.cosign_until = previous
            signer.cosign = (old.public_key().public_bytes_raw(), old.sign)
        return cls(Sealer(ring), signer, gateway_id)

    @property
    def on(self) -> bool:
        return self.sealer is not None

    # ---- open / meta --------------------------------------------------------------------

    def adopt(self, read_meta: Callable[[str], str | None]) -> None:
        """Check the file against the keyring and take over its chain; raises OutboxKeyError."""
        if self.sealer is None:
            if read_meta(_SEALED_MARK) is not None:
                raise OutboxKeyError("the outbox is encrypted but no keyring was given")
            return
        try:
            self.sealer.adopt(read_meta)
        except KeyMismatch as e:
            raise OutboxKeyError(f"wrong or incomplete keyring for this outbox: {e}") from None
        self.head = chain.ChainHead.from_meta(read_meta("chain"))
        self.note = read_meta("checkpoint")

    def carry_over(self, damaged: Mapping[str, str], where: str) -> None:
        """Continue the chain of a file found damaged at start (its meta as salvaged, maybe {}).

        Carried over, a receiver sees the records stranded in the damaged file as missing
        positions (true: they never left) and the chain goes on authenticating.  Restarted at 1,
        it would see two different records at every reused position, as if forged.
        """
        if self.sealer is None:
            return
        if damaged.get("chain") and damaged.get(_SEALED_MARK) == self.sealer.check_value():
            self.head = chain.ChainHead.from_meta(damaged["chain"])
            self.note = damaged.get("checkpoint")
            log.warning("outbox_chain_carried_over", size=self.head.size, damaged=where)
        else:
            log.error("outbox_chain_restarted", damaged=where,
                      detail="the damaged file's chain head is unreadable: the chain starts again at 1, and a "
                             "receiver checking it will see the positions reused")

    def meta_rows(self) -> list[tuple[str, str]]:
        if self.sealer is None:
            return []
        rows = [*self.sealer.meta_rows(), ("chain", self.head.to_meta())]
        if self.note is not None:
            rows.append(("checkpoint", self.note))
        return rows

    def new_file(self) -> None:
        if self.sealer is not None:
            self.sealer.new_file()

    # ---- records ------------------------------------------------------------------------

    def ident(self, key: str, own: bool = False) -> str:
        """The stored identity of ``key`` (``own``: the caller knows it is ``<gateway>:<seq>``)."""
        if own or self.sealer is None or self._own_key(key):
            # ``<gateway>:<seq>`` says nothing the row's seq column does not: stored as is, these
            # keys grow the UNIQUE index at its end instead of at random places (fewer pages
            # written per commit, on an SD card) and cost no MAC
            return key
        # the batch's dedupe and its inserts both need a key's hash: compute it once
        ident = self._idents.get(key)
        if ident is None:
            ident = self._idents[key] = self.sealer.ident(key)
        return ident

    def _own_key(self, key: str) -> bool:
        return key.startswith(self._own_prefix) and key[len(self._own_prefix):].isdigit()

    def begin(self) -> SealTxn:
        return SealTxn(self.head.copy(), self.note)

    def seal(self, txn: SealTxn, key: str, patient: str, payload: bytes) -> tuple[str, str, bytes, int | None]:
        """``(stored key, stored patient, stored payload, chain position)`` of a new row."""
        if self.sealer is None:
            return key, patient, payload, None
        n, prev = txn.head.append(payload)
        txn.moved = True
        ident, blob = self.sealer.seal_record(key, patient, payload, prev, self._idents.pop(key, None))
        return ident, "", blob, n

    def seal_many(self, txn: SealTxn, rows: list[tuple[str, str, bytes, bool]],
                  ) -> list[tuple[str, str, bytes, int | None]]:
        """``seal`` for ``(key, patient, payload, own key)`` rows in chain order, one call per commit."""
        if self.sealer is None:
            return [(key, patient, payload, None) for key, patient, payload, _ in rows]
        if not rows:
            return []
        links = txn.head.extend(payload for _, _, payload, _ in rows)
        txn.moved = True
        pop = self._idents.pop
        work = [(key if own else pop(key, "") or self.ident(key), key, patient, payload, prev)
                for (key, patient, payload, own), (_, prev) in zip(rows, links, strict=True)]
        blobs = self.sealer.seal_records(work)
        return [(w[0], "", blob, n) for w, blob, (n, _) in zip(work, blobs, links, strict=True)]

    def link_info(self, key: str, blob: bytes) -> tuple[bytes, bytes] | None:
        """``(prev, link)`` of a stored chained record (for a tombstone); None if unreadable."""
        if self.sealer is None or not is_sealed(blob):
            return None
        try:
            row = self.sealer.open_record(key, blob)
        except (RowUnreadable, KeyMismatch):
            return None
        if row.prev is None:
            return None
        return row.prev, chain.link(row.prev, row.payload)

    def tombstone(self, txn: SealTxn, dropped: dict[str, list[tuple[int, bytes, bytes]]], now: float,
                  ) -> tuple[str, str, bytes, int | None] | None:
        """The tombstone row for chain positions dropped in this transaction (None if none)."""
        if self.sealer is None or not any(dropped.values()):
            return None
        key = f"{self.gateway_id}:tomb:{txn.head.size + 1}"
        body = chain.tombstone(self.gateway_id, key, datetime.fromtimestamp(now, tz=UTC).isoformat(), dropped)
        return self.seal(txn, key, "_gateway", body)

    def finish(self, txn: SealTxn) -> list[tuple[str, str]]:
        """Sign the transaction's chain head; the meta rows to write with it."""
        if self.sealer is None or self.signer is None:
            return []
        if txn.moved:
            s = self.signer
            txn.note = s.note(checkpoint.body(s.origin, txn.head.size, txn.head.head))
        rows = [*self.sealer.meta_rows(), ("chain", txn.head.to_meta())]
        if txn.note is not None:
            rows.append(("checkpoint", txn.note))
        return rows

    def applied(self, txn: SealTxn | None) -> None:
        self._idents.clear()  # keys deduped away were never sealed
        if txn is not None:
            self.head, self.note = txn.head, txn.note

    def open_row(self, key: str, patient: str, blob: bytes, chain_n: int | None) -> tuple[str, str, bytes] | None:
        """``(key, patient, payload to publish)``; None for a row that fails authentication."""
        if self.sealer is None or not is_sealed(blob):
            return key, patient, blob  # in clear (no keyring, or written before encryption)
        try:
            row = self.sealer.open_record(key, blob)
        except (RowUnreadable, KeyMismatch) as e:
            log.error("outbox_row_unreadable", error=str(e))
            return None
        payload = row.payload
        if chain_n is not None and row.prev is not None:
            payload = chain.outbound(payload, chain_n, row.prev)
        return row.key, row.patient, payload

    # ---- state rows ---------------------------------------------------------------------

    def state_writes(self, last: dict[str, bytes | None]) -> tuple[list[tuple[str, bytes]], list[tuple[str]]]:
        """``(upserts, deletes)`` for the state table."""
        if self.sealer is None:
            return ([(k, v) for k, v in last.items() if v is not None],
                    [(k,) for k, v in last.items() if v is None])
        s = self.sealer
        ups = [s.seal_state(k, v) for k, v in last.items() if v is not None]
        return ups, [(s.state_ident(k),) for k, v in last.items() if v is None]

    def load_state(self, conn: sqlite3.Connection, prefix: str) -> dict[str, bytes]:
        s = self.sealer
        if s is None:
            from gateway.outbox.schema import load_state  # noqa: PLC0415

            return load_state(conn, prefix)
        scan = s.state_scan_prefix(prefix)
        out: dict[str, bytes] = {}
        for ident, blob in conn.execute(
            "SELECT key, value FROM state WHERE substr(key, 1, ?) = ?", (len(scan), scan)
        ):
            value = bytes(blob)
            if not is_sealed(value):
                name = str(ident)  # written in clear before encryption was turned on
            else:
                try:
                    name, value = s.open_state(str(ident), value)
                except (RowUnreadable, KeyMismatch) as e:
                    log.error("outbox_state_unreadable", error=str(e))
                    continue
            if name.startswith(prefix):
                out[name] = value
        return out

