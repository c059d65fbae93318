"""The per-gateway hash chain over outbound records (pure functions, no I/O).

Position ``n`` (from 1) links the record's canonical bytes — its JSON exactly as the outbox
stored it — to everything before it::

    link_0 = 32 zero bytes
    link_n = SHA-256(link_{n-1} || canonical bytes of record n)

Positions are assigned in the outbox's writer transaction, so chain order is commit order and a
crash can neither skip nor repeat a position.  A published record carries its position and the
previous link as a last JSON member, ``"chain":{"n":N,"prev":"<base64>"}``; a receiver gets the
canonical bytes back with ``split_payload`` (the member is cut off; nothing is re-serialised).
Signed checkpoints (``gateway.checkpoint``) commit to ``(n, link_n)``.

Records the outbox drops by quota leave a *tombstone*: a chained record listing the dropped
positions, so "dropped by policy, counted" is told apart from "lost or withheld".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

LINK_BYTES = 32
GENESIS = bytes(LINK_BYTES)
_MARK = b',"chain":{'
# the longest member ``outbound`` appends: a 19-digit position and a base64 SHA-256 link
MEMBER_MAX_BYTES = len(_MARK) + len(b'"n":,"prev":""}') + 19 + 44


def link(prev: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(prev + canonical).digest()


@dataclass(slots=True)
class ChainHead:
    """Mutable head of the chain; the writer works on a copy and keeps it only after COMMIT."""

    size: int = 0
    head: bytes = GENESIS

    def copy(self) -> ChainHead:
        return ChainHead(self.size, self.head)

    def append(self, canonical: bytes) -> tuple[int, bytes]:
        """Chain one record; returns ``(position, previous link)``."""
        prev = self.head
        self.size += 1
        self.head = link(prev, canonical)
        return self.size, prev

    def extend(self, canonicals: Iterable[bytes]) -> list[tuple[int, bytes]]:
        """``append`` for many records at once: ``(position, previous link)`` of each."""
        sha256 = hashlib.sha256
        size, head = self.size, self.head
        out: list[tuple[int, bytes]] = []
        for canonical in canonicals:
            size += 1
            out.append((size, head))
            head = sha256(head + canonical).digest()
        self.size, self.head = size, head
        return out

    def to_meta(self) -> str:
        return f"{self.size}:{base64.b64encode(self.head).decode()}"

    @classmethod
    def from_meta(cls, raw: str | None) -> ChainHead:
        if not raw:
            return cls()
        size, _, head = raw.partition(":")
        return cls(int(size), base64.b64decode(head))


def outbound(canonical: bytes, n: int, prev: bytes) -> bytes:
    """The published payload: the record's JSON with the chain member appended."""
    if not canonical.endswith(b"}"):
        raise ValueError("a chained payload must be a JSON object")
    tail = b'"n":%d,"prev":"%s"}}' % (n, base64.b64encode(prev))
    return canonical[:-1] + _MARK + tail


class NotChained(ValueError):
    """The payload carries no (well-formed) chain member."""


def split_payload(payload: bytes) -> tuple[bytes, int, bytes]:
    """``(canonical bytes, position, previous link)`` of a published record."""
    at = payload.rfind(_MARK)
    if at < 0:
        raise NotChained("no chain member")
    try:
        member = json.loads(payload[at + len(_MARK) - 1 : -1])
        n, prev_b64 = member["n"], member["prev"]
        prev = base64.b64decode(prev_b64, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise NotChained(f"malformed chain member: {e}") from None
    if not payload.endswith(b"}}") or set(member) != {"n", "prev"} or not isinstance(n, int) or n < 1 \
            or len(prev) != LINK_BYTES:
        raise NotChained("malformed chain member")
    return payload[:at] + b"}", n, prev


def ranges(positions: Iterable[int]) -> list[list[int]]:
    """Sorted positions as inclusive ``[first, last]`` runs."""
    out: list[list[int]] = []
    for p in sorted(set(positions)):
        if out and p == out[-1][1] + 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return out


def dropped_runs(dropped: Iterable[tuple[int, bytes, bytes]]) -> list[list[int | str]]:
    """``(position, prev link, link)`` of dropped records as runs ``[first, last, prev, link]``:
    the links on both sides of each run let a verifier walk across it."""
    runs: list[list[int | str]] = []
    last_n = -1
    for n, prev, lk in sorted(dropped):
        if runs and n == last_n + 1:
            runs[-1][1], runs[-1][3] = n, base64.b64encode(lk).decode()
        else:
            runs.append([n, n, base64.b64encode(prev).decode(), base64.b64encode(lk).decode()])
        last_n = n
    return runs


def tombstone(gateway_id: str, key: str, time_iso: str, dropped: dict[str, list[tuple[int, bytes, bytes]]]) -> bytes:
    """Canonical bytes of a tombstone for records dropped by quota, per record class."""
    body = {
        "schema_version": 1,
        "kind": "tombstone",
        "key": key,
        "gateway_id": gateway_id,
        "time": time_iso,
        "reason": "quota",
        "count": sum(len(v) for v in dropped.values()),
        "classes": {k: len(v) for k, v in sorted(dropped.items())},
        "dropped": dropped_runs(d for v in dropped.values() for d in v),
    }
    return json.dumps(body, separators=(",", ":")).encode()
