"""What the outbox writes to disk for a row: in clear (no keyring) or sealed (AES-256-GCM).

A sealed row keeps nothing personal in clear.  Its identity columns (a service record key such as
a billing key, a state row's name) hold a keyed hash (BLAKE2b keyed with the keyring's index key,
which never rotates), so uniqueness and look-ups still work; a key this gateway numbered
(``<gateway>:<seq>``) is stored as is (see ``RowSealing.ident``).  The real key, the patient
pseudonym, the chain link and the payload travel inside the ciphertext::

    blob = MAGIC(2) || key id (2, big-endian) || nonce (12) || AES-256-GCM(plaintext) || tag (16)
    associated data = "iomt-outbox/1" || table || stored identity

Binding the stored identity as associated data means a ciphertext moved to another row (or from a
state row to a record row) fails authentication instead of being read as that row.

Nonces are a per-file random salt (4 bytes) and a 64-bit counter persisted hi-lo like the key
sequence: a crash skips unused numbers, never repeats one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.keyring import Keyring

MAGIC = b"\xa5\x01"
_HEAD = struct.Struct(">2sH12s")
_NONCE_BLOCK = 1_000_000
_AD_PREFIX = b"iomt-outbox/1\x00"
_CHECK = b"iomt-gateway keyring check v1"
LINK_BYTES = 32


class RowUnreadable(Exception):
    """A stored row failed authentication (damaged or tampered with)."""


class KeyMismatch(Exception):
    """The database was written under keys this keyring does not hold; the message says which."""


@dataclass(frozen=True, slots=True)
class OpenedRow:
    key: str
    patient: str
    payload: bytes
    prev: bytes | None  # chain link before this record; None when the row is not chained


def _u16(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


class Sealer:
    """Seals and opens rows for one database file (writer thread only: not thread-safe)."""

    def __init__(self, ring: Keyring) -> None:
        self._ring = ring
        self._aead = {kid: AESGCM(k) for kid, k in ring.aead.items()}
        # keyed once: each identity then costs a copy and one compression, not a key schedule
        self._id_mac = hashlib.blake2b(key=ring.index, digest_size=18, person=b"iomt-outbox-id")
        self._kid = ring.current
        self._salt = os.urandom(4)
        self._next = 0
        self._hi = 0
        self.kids_used: set[int] = set()

    # ---- per-file state kept in the meta table ------------------------------------------

    def check_value(self) -> str:
        """Identifies the index key (not secret): a different keyring is told apart at open."""
        return base64.b64encode(hmac.digest(self._ring.index, _CHECK, "sha256")[:16]).decode()

    def adopt(self, read_meta: Callable[[str], str | None]) -> None:
        """Take over the file's nonce reservation and key ids; raise KeyMismatch on a foreign file."""
        stored = read_meta("key_check")
        if stored is not None and stored != self.check_value():
            raise KeyMismatch("the outbox was written with a different keyring (index key differs)")
        raw = read_meta("crypto")
        if raw:
            info = json.loads(raw)
            self._salt = bytes.fromhex(str(info["salt"]))
            self._next = self._hi = int(info["hi"])
            self.kids_used = {int(k) for k in info.get("kids", [])}
        missing = sorted(self.kids_used - set(self._aead))
        if missing:
            raise KeyMismatch(f"rows are sealed with key id(s) {missing}, which the keyring does not hold "
                              f"(it holds {sorted(self._aead)})")

    def meta_rows(self) -> list[tuple[str, str]]:
        """Rows to write in every transaction that may have sealed something."""
        info = {"salt": self._salt.hex(), "hi": self._hi, "kids": sorted(self.kids_used | {self._kid})}
        return [("key_check", self.check_value()), ("crypto", json.dumps(info, separators=(",", ":")))]

    def new_file(self) -> None:
        """A fresh file (first open or after moving a damaged one aside): a fresh nonce salt."""
        self._salt = os.urandom(4)

    # ---- identities ---------------------------------------------------------------------

    def ident(self, name: str) -> str:
        # keyed BLAKE2b (RFC 7693), a MAC in its own right: a third of HMAC-SHA-256's time per row
        mac = self._id_mac.copy()
        mac.update(name.encode())
        return "h:" + binascii.b2a_base64(mac.digest(), newline=False).decode()

    def state_ident(self, name: str) -> str:
        # the first path segment ("billing/", "pipeline/") stays readable: load_state scans by it
        head, sep, _ = name.partition("/")
        return f"{head}{sep}{self.ident(name)}" if sep else self.ident(name)

    @staticmethod
    def state_scan_prefix(prefix: str) -> str:
        head, sep, _ = prefix.partition("/")
        return head + sep

    # ---- sealing ------------------------------------------------------------------------

    def _seal_many(self, table: bytes, rows: Iterable[tuple[str, bytes]]) -> list[bytes]:
        """Blobs for ``(stored identity, plaintext)`` rows: the one place nonces are drawn."""
        encrypt = self._aead[self._kid].encrypt
        head = MAGIC + self._kid.to_bytes(2, "big")
        ad = _AD_PREFIX + table
        salt, n = self._salt, self._next
        out: list[bytes] = []
        for ident, plain in rows:
            nonce = salt + n.to_bytes(8, "big")
            n += 1
            out.append(head + nonce + encrypt(nonce, plain, ad + ident.encode()))
        self._next = n
        if n >= self._hi:  # the reservation written with this transaction stays above every nonce used
            self._hi = n + _NONCE_BLOCK
        return out

    def _open(self, table: bytes, ident: str, blob: bytes) -> bytes:
        if len(blob) < _HEAD.size + 16 or blob[:2] != MAGIC:
            raise RowUnreadable(f"row {ident}: not a sealed value")
        _, kid, nonce = _HEAD.unpack_from(blob)
        aead = self._aead.get(kid)
        if aead is None:
            raise KeyMismatch(f"row {ident} is sealed with key id {kid}, which the keyring does not hold")
        try:
            return aead.decrypt(nonce, blob[_HEAD.size:], _AD_PREFIX + table + ident.encode())
        except InvalidTag:
            raise RowUnreadable(f"row {ident}: authentication failed (damaged or altered)") from None

    def seal_record(self, key: str, patient: str, payload: bytes, prev: bytes | None,
                    ident: str | None = None) -> tuple[str, bytes]:
        """``(stored key, blob)`` for an outbox row (``ident``: ``self.ident(key)`` if known)."""
        ident = ident or self.ident(key)
        return ident, self.seal_records([(ident, key, patient, payload, prev)])[0]

    def seal_records(self, rows: Iterable[tuple[str, str, str, bytes, bytes | None]]) -> list[bytes]:
        """Blobs for ``(stored identity, key, patient, payload, previous link)`` rows, in order.

        One call per group commit keeps the per-row work in one loop (the writer thread shares
        the GIL with the event loop).
        """
        def plain(key: str, patient: str, payload: bytes, prev: bytes | None) -> bytes:
            k, p = key.encode(), patient.encode()
            if len(k) > 0xFFFF or len(p) > 0xFFFF:
                raise ValueError("key or patient longer than 65,535 bytes")
            return b"".join((b"\x00" if prev is None else b"\x01" + prev, len(k).to_bytes(2, "big"), k,
                             len(p).to_bytes(2, "big"), p, payload))

        return self._seal_many(b"outbox\x00", ((ident, plain(key, patient, payload, prev))
                                                for ident, key, patient, payload, prev in rows))

    def open_record(self, ident: str, blob: bytes) -> OpenedRow:
        plain = self._open(b"outbox\x00", ident, blob)
        try:
            pos = 1 + (LINK_BYTES if plain[0] == 1 else 0)
            prev = plain[1:pos] if plain[0] == 1 else None
            (n,) = struct.unpack_from(">H", plain, pos)
            key = plain[pos + 2 : pos + 2 + n].decode()
            pos += 2 + n
            (m,) = struct.unpack_from(">H", plain, pos)
            patient = plain[pos + 2 : pos + 2 + m].decode()
            return OpenedRow(key, patient, plain[pos + 2 + m :], prev)
        except (IndexError, struct.error, UnicodeDecodeError):
            raise RowUnreadable(f"row {ident}: malformed plaintext") from None

    def seal_state(self, name: str, value: bytes) -> tuple[str, bytes]:
        ident = self.state_ident(name)
        return ident, self._seal_many(b"state\x00", [(ident, _u16(name.encode()) + value)])[0]

    def open_state(self, ident: str, blob: bytes) -> tuple[str, bytes]:
        plain = self._open(b"state\x00", ident, blob)
        try:
            (n,) = struct.unpack_from(">H", plain)
            return plain[2 : 2 + n].decode(), plain[2 + n :]
        except (struct.error, UnicodeDecodeError):
            raise RowUnreadable(f"state row {ident}: malformed plaintext") from None


def is_sealed(blob: bytes) -> bool:
    return blob[:2] == MAGIC
