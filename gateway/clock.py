"""Wall-clock access with a synchronisation check, injectable for tests.

A Raspberry Pi has no RTC: after a power cut its clock restarts from the last saved time (or 1970)
until NTP answers.  The kernel knows whether the clock is disciplined: ``adjtimex(2)`` returns
``TIME_ERROR`` while the ``STA_UNSYNC`` status bit is set.  systemd-timesyncd also drops
``/run/systemd/timesync/synchronized`` once it has synchronised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import os
import time
from dataclasses import dataclass
from typing import Protocol

from gateway.records import ClockQuality

# Any time before this cannot be a real reading taken by this software (release year).
PLAUSIBLE_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z

_TIME_ERROR = 5
_TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"


class SyncPolicy(enum.StrEnum):
    AUTO = "auto"  # ask the kernel / timesyncd
    ASSUME_SYNCED = "assume_synced"  # hosts with an RTC or a container whose host keeps time
    ASSUME_UNSYNCED = "assume_unsynced"  # testing


class Clock(Protocol):
    def now(self) -> float: ...

    def quality(self) -> ClockQuality: ...

    def monotonic(self) -> float: ...


class _Timex(ctypes.Structure):
    # Only the leading fields matter; the tail is padding the kernel may write into.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_pad", ctypes.c_byte * 256),
    ]


def kernel_clock_synchronised() -> bool | None:
    """True/False from ``adjtimex``; None where the call is unavailable (non-Linux)."""
    if os.path.exists(_TIMESYNC_FLAG):
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != _TIME_ERROR)


@dataclass
class SystemClock:
    policy: SyncPolicy = SyncPolicy.AUTO
    recheck_s: float = 10.0
    _synced: bool | None = None
    _checked_at: float = -1e18

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def quality(self) -> ClockQuality:
        if self.policy is SyncPolicy.ASSUME_SYNCED:
            return ClockQuality.SYNCED
        if self.policy is SyncPolicy.ASSUME_UNSYNCED:
            return ClockQuality.UNSYNCED
        mono = time.monotonic()
        # Once synchronised, stay synchronised: the kernel flag may flicker during slews.
        if not self._synced and mono - self._checked_at >= self.recheck_s:
            self._checked_at = mono
            kernel = kernel_clock_synchronised()
            # Unknown platform: trust the clock only if it is plausibly current.
            self._synced = kernel if kernel is not None else time.time() >= PLAUSIBLE_EPOCH
        if self._synced and time.time() >= PLAUSIBLE_EPOCH:
            return ClockQuality.SYNCED
        return ClockQuality.UNSYNCED


@dataclass
class ManualClock:
    """A clock tests move by hand."""

    t: float = PLAUSIBLE_EPOCH
    mono: float = 0.0
    synced: bool = True
    real_monotonic: bool = False
    """Wall time set by hand, elapsed time real: replays that jump through days while rate limits
    (e.g. the ledger's save interval) still see seconds pass."""

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return time.monotonic() if self.real_monotonic else self.mono

    def quality(self) -> ClockQuality:
        return ClockQuality.SYNCED if self.synced else ClockQuality.UNSYNCED

    def advance(self, dt: float) -> None:
        self.t += dt
        self.mono += dt
