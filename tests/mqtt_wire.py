"""What a broker acknowledged, read off the wire: a tap for tests/broker.py's ``TcpProxy``.

A broker's PUBACK is its promise to deliver. When a test finds an acknowledged record missing
at the subscriber, the question is whose fault it is: the gateway's (it counted a record as
delivered that no broker acknowledged) or the broker's (it acknowledged, then lost it, as an
ejabberd node does when killed after its PUBACK but before its cross-node routing left it).
Only the bytes on the link can tell, so this decodes the MQTT 5 packets the proxy forwards:
PUBLISH (QoS 1, with its ``key`` user property) from the client and PUBACK from the broker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

_CONNECT, _PUBLISH, _PUBACK = 1, 3, 4
_UTF8_PAIR = 0x26
# MQTT 5 property identifiers by the size of their value (spec 2.2.2.2); a PUBLISH carries few
_FIXED = {0x01: 1, 0x02: 4, 0x23: 2, 0x24: 1, 0x25: 1, 0x11: 4, 0x13: 2, 0x17: 1, 0x19: 1,
          0x21: 2, 0x22: 2, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1, 0x18: 4}
_PREFIXED = {0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F}  # UTF-8 string or binary data
_VARINT = {0x0B}


class WireError(ValueError):
    """Bytes that are not the MQTT the test expects."""


def _varint(buf: bytes | memoryview, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    for _ in range(4):
        if i >= len(buf):
            raise IndexError("truncated variable byte integer")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
    raise WireError("variable byte integer longer than 4 bytes")


def _u16(buf: bytes, i: int) -> int:
    return int.from_bytes(buf[i : i + 2], "big")


def _string(buf: bytes, i: int) -> tuple[bytes, int]:
    n = _u16(buf, i)
    return buf[i + 2 : i + 2 + n], i + 2 + n


def user_properties(props: bytes) -> dict[str, str]:
    """The user properties among an MQTT 5 property block's (the other properties skipped)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(props):
        pid, i = _varint(props, i)
        if pid == _UTF8_PAIR:
            name, i = _string(props, i)
            value, i = _string(props, i)
            out[name.decode()] = value.decode()
        elif pid in _FIXED:
            i += _FIXED[pid]
        elif pid in _PREFIXED:
            i += 2 + _u16(props, i)
        elif pid in _VARINT:
            _, i = _varint(props, i)
        else:
            raise WireError(f"unknown MQTT 5 property 0x{pid:02x}")
    return out


def packets(buf: bytearray) -> list[tuple[int, int, bytes]]:
    """Whole packets ``(type, flags, body)`` taken off the front of ``buf``; a partial one stays."""
    out: list[tuple[int, int, bytes]] = []
    while buf:
        try:
            length, start = _varint(buf, 1)
        except IndexError:
            break
        if len(buf) < start + length:
            break
        out.append((buf[0] >> 4, buf[0] & 0x0F, bytes(buf[start : start + length])))
        del buf[: start + length]
    return out


@dataclass
class Acked:
    topic: str
    key: str
    at: float  # time.time() when the PUBACK passed the tap
    reason: int  # the PUBACK's reason code: 0 success, 0x10 no matching subscribers


@dataclass
class _Link:
    up: bytearray = field(default_factory=bytearray)  # client -> broker
    down: bytearray = field(default_factory=bytearray)  # broker -> client
    version: int = 5
    in_flight: dict[int, tuple[str, str]] = field(default_factory=dict)  # packet id -> topic, key


@dataclass
class PubackTap:
    """Feeds on a ``TcpProxy``'s traffic; ``acked`` lists the record keys the broker acknowledged."""

    acked: list[Acked] = field(default_factory=list)
    published: int = 0
    _links: dict[int, _Link] = field(default_factory=dict)

    def __call__(self, link: int, to_broker: bool, data: bytes) -> None:
        st = self._links.setdefault(link, _Link())
        buf = st.up if to_broker else st.down
        buf += data
        for kind, flags, body in packets(buf):
            if to_broker:
                self._from_client(st, kind, flags, body)
            elif kind == _PUBACK:
                self._puback(st, body)

    def keys(self, *, not_ending: tuple[str, ...] = ()) -> set[str]:
        """Keys acknowledged, leaving out topics that end with any of ``not_ending``."""
        return {a.key for a in self.acked if not (not_ending and a.topic.endswith(not_ending))}

    def _from_client(self, st: _Link, kind: int, flags: int, body: bytes) -> None:
        if kind == _CONNECT:
            name, i = _string(body, 0)
            st.version = body[i]
            if name != b"MQTT" or st.version != 5:
                raise WireError(f"expected MQTT 5, the client speaks {name!r} level {st.version}")
        elif kind == _PUBLISH and (flags >> 1) & 0x03 == 1:
            topic, i = _string(body, 0)
            packet_id = _u16(body, i)
            plen, j = _varint(body, i + 2)
            key = user_properties(body[j : j + plen]).get("key")
            if key is not None:
                # a resend (DUP) of the same id carries the same record
                st.in_flight[packet_id] = (topic.decode(), key)
                self.published += 1

    def _puback(self, st: _Link, body: bytes) -> None:
        packet_id = _u16(body, 0)
        reason = body[2] if len(body) > 2 else 0
        sent = st.in_flight.pop(packet_id, None)
        if sent is not None and reason < 0x80:  # 0x10, "no matching subscribers", is a success
            self.acked.append(Acked(*sent, time.time(), reason))
