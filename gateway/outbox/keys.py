"""Idempotency keys ``<gateway_id>:<seq>`` from a persistent hi-lo counter.

The counter hands out numbers from memory and persists only the *upper end* of the block it is
using.  The reservation of a new block is queued to the writer before the first number of that
block is returned, so any committed record carrying a number from the block commits in the same
or a later transaction than the reservation: after a crash the counter resumes above every number
that can appear in the database.  Numbers reserved but never used are skipped (gaps are fine).
"""

from __future__ import annotations

from collections.abc import Callable

SEQ_BLOCK = 10_000


def format_key(gateway_id: str, seq: int) -> str:
    return f"{gateway_id}:{seq}"


def parse_seq(gateway_id: str, key: str) -> int | None:
    """The sequence number of a key this gateway made, None for any other key (service keys...)."""
    prefix, sep, tail = key.rpartition(":")
    if not sep or prefix != gateway_id or not tail.isdigit() or len(tail) > 18:
        return None
    return int(tail)


class SeqCounter:
    """Strictly increasing numbers; ``reserve(hi)`` must durably record ``hi`` before it is used."""

    def __init__(self, start: int, reserved_until: int, reserve: Callable[[int], None], *,
                 block: int = SEQ_BLOCK) -> None:
        if not start <= reserved_until:
            raise ValueError("start must not exceed the reserved block end")
        self._next = start
        self._limit = reserved_until
        self._reserve = reserve
        self._block = block

    def next(self) -> int:
        if self._next >= self._limit:
            self._limit = self._next + self._block
            self._reserve(self._limit)
        n = self._next
        self._next += 1
        return n

    @property
    def peek(self) -> int:
        return self._next
