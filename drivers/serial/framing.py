"""Shared framing machinery for the serial protocols: drop reports, counters, a fixed-length framer.

A framer turns a byte stream into frames and never trusts the stream: it looks for a frame that
passes the protocol's own check (checksum, sync bits, plausible fields), and on failure drops ONE
byte and looks again, so that a real frame hidden behind garbage or a lost byte is found at its
first byte.  Every byte that does not end up in a frame is counted and reported as ``Dropped``.

While unlocked (at start, after any drop) a candidate frame must be confirmed by ``confirm``
valid frames right behind it (each one ``agree``-ing with the one before, where the protocol
gives such a test), which keeps a random window of garbage from being taken for a frame; once
locked, each frame is judged on its own check.  At the end of a finite capture ``finish()``
accepts a candidate followed by fewer frames than ``confirm`` when those are valid (without
``agree``: a capture of a few unrelated reference frames still decodes), so the last frames of
a file are not lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class Dropped:
    """Bytes skipped because they did not form a valid frame.  ``offset`` counts from stream start."""

    offset: int
    count: int
    reason: str


@dataclass(slots=True)
class FramerStats:
    frames: int = 0
    dropped_bytes: int = 0
    drops: int = 0
    bytes_in: int = 0


@dataclass
class FixedFramer(Generic[F]):
    """Frames of ``frame_len`` bytes; ``parse(buf, i)`` returns the frame at ``buf[i:]`` or None.

    ``parse`` must look only at ``buf[i : i + frame_len]`` and must not raise on any input.
    ``agree(a, b)``: frame ``b`` can follow frame ``a`` on a real device (for protocols without a
    checksum, whose frames noise passes too often on their own).
    """

    frame_len: int
    parse: Callable[[bytes | bytearray, int], F | None]
    reason: str = "no valid frame"
    confirm: int = 1
    agree: Callable[[F, F], bool] | None = None
    stats: FramerStats = field(default_factory=FramerStats)
    _buf: bytearray = field(default_factory=bytearray)
    _locked: bool = False
    _offset: int = 0  # stream offset of _buf[0]
    _drop_start: int = -1
    _drop_count: int = 0

    def _drop(self, pos: int, out: list[F | Dropped]) -> None:
        if self._drop_count == 0:
            self._drop_start = self._offset + pos
        self._drop_count += 1
        self.stats.dropped_bytes += 1  # counted now; reported as one Dropped when the run ends

    def _flush_drop(self, out: list[F | Dropped]) -> None:
        if self._drop_count:
            out.append(Dropped(self._drop_start, self._drop_count, self.reason))
            self.stats.drops += 1
            self._drop_count = 0

    def feed(self, data: bytes) -> list[F | Dropped]:
        """Consume ``data``; return the frames completed and the drops decided, in stream order."""
        self.stats.bytes_in += len(data)
        self._buf += data
        return self._run(final=False)

    def finish(self) -> list[F | Dropped]:
        """End of a finite stream: accept an unconfirmed last frame, report leftovers as dropped."""
        out = self._run(final=True)
        for _ in range(len(self._buf)):
            self._drop(0, out)
        self._offset += len(self._buf)
        self._buf.clear()
        self._flush_drop(out)
        return out

    def _run(self, final: bool) -> list[F | Dropped]:
        out: list[F | Dropped] = []
        buf = self._buf
        n = len(buf)
        L = self.frame_len
        parse = self.parse
        i = 0
        while n - i >= L:
            frame = parse(buf, i)
            if frame is not None and not self._locked:
                behind = min(self.confirm, (n - i) // L - 1)
                if behind < self.confirm and not final:
                    break  # wait for the confirming frames
                if not self._confirmed(frame, i, behind):
                    frame = None
            if frame is None:
                self._locked = False
                self._drop(i, out)
                i += 1
                continue
            self._flush_drop(out)
            self._locked = True
            self.stats.frames += 1
            out.append(frame)
            i += L
        if i:
            self._offset += i
            del buf[:i]
        return out

    def _confirmed(self, frame: F, i: int, behind: int) -> bool:
        agree = self.agree if behind >= self.confirm else None  # the tail of a finite capture
        prev = frame
        for k in range(1, behind + 1):
            nxt = self.parse(self._buf, i + k * self.frame_len)
            if nxt is None or (agree is not None and not agree(prev, nxt)):
                return False
            prev = nxt
        return True
