"""A cursor over a notification payload that raises ``DecodeError`` instead of IndexError.

Every profile decoder reads through this, so a truncated or garbage payload can only ever end in
the one typed error the driver counts and drops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from drivers.ble.ieee11073 import float32, sfloat


class DecodeError(ValueError):
    """A payload that does not follow its profile (truncated, reserved bits, impossible value)."""


@dataclass(frozen=True, slots=True)
class DeviceDateTime:
    """The Bluetooth Date Time (0x2A08) as sent: device-local, no zone; year 0 = unknown."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int

    @property
    def known(self) -> bool:
        return self.year != 0 and self.month != 0 and self.day != 0

    def as_naive_unix(self) -> float | None:
        """Seconds since 1970 reading the device's wall clock as if it were UTC; None if unknown."""
        if not self.known:
            return None
        return datetime(self.year, self.month, self.day, self.hour, self.minute, self.second, tzinfo=UTC).timestamp()

    def isoformat(self) -> str:
        y = f"{self.year:04d}" if self.year else "????"
        return f"{y}-{self.month:02d}-{self.day:02d}T{self.hour:02d}:{self.minute:02d}:{self.second:02d}"


class Reader:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    def _take(self, n: int, what: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise DecodeError(f"truncated: {what} needs {n} bytes at offset {self._pos}, have {len(self._data)}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def u8(self, what: str) -> int:
        return self._take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self._take(2, what), "little")

    def s16(self, what: str) -> int:
        return int.from_bytes(self._take(2, what), "little", signed=True)

    def u24(self, what: str) -> int:
        return int.from_bytes(self._take(3, what), "little")

    def u64(self, what: str) -> int:
        return int.from_bytes(self._take(8, what), "little")

    def sfloat(self, what: str) -> float | None:
        return sfloat(self.u16(what))

    def float32(self, what: str) -> float | None:
        return float32(int.from_bytes(self._take(4, what), "little"))

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def date_time(self, what: str) -> DeviceDateTime:
        year = self.u16(what)
        month, day, hour, minute, second = self._take(5, what)
        dt = DeviceDateTime(year, month, day, hour, minute, second)
        # 0 is "unknown" for year, month and day; anything else must be a real calendar date.
        if (year and not 1582 <= year <= 9999) or month > 12 or day > 31 or hour > 23 or minute > 59 or second > 59:
            raise DecodeError(f"{what}: impossible date-time {dt.isoformat()}")
        if dt.known:
            try:
                datetime(year, month, day)
            except ValueError as e:
                raise DecodeError(f"{what}: impossible date {dt.isoformat()}") from e
        return dt


def in_range(what: str, value: float | None, lo: float, hi: float) -> float | None:
    """Reject a number a device cannot mean (a garbage SFLOAT can decode to 2047e7)."""
    if value is not None and not lo <= value <= hi:
        raise DecodeError(f"{what} {value} outside [{lo}, {hi}]")
    return value
