"""Wall-clock access with a synchronisation check, injectable for tests.

A Raspberry Pi has no RTC: after a power cut its clock restarts from the last saved time (or 1970)
until NTP answers.  How the host is asked whether NTP has synchronised it is in ``gateway.clock_sync``.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import Protocol

from gateway.clock_sync import host_clock_synchronised, host_clock_synchronised_blocking
from gateway.readings import ClockQuality

# Any time before this cannot be a real reading taken by this software (release year).
PLAUSIBLE_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class SyncPolicy(enum.StrEnum):
    AUTO = "auto"  # ask the kernel / timesyncd
    ASSUME_SYNCED = "assume_synced"  # hosts with an RTC or a container whose host keeps time
    ASSUME_UNSYNCED = "assume_unsynced"  # testing


class Clock(Protocol):
    """The one clock of the daemon: wall time, its quality, elapsed time and waiting.

    Timing logic (backoff, health, heartbeats) reads ``monotonic()`` and waits with ``sleep()``
    of the injected clock, never ``time`` or ``asyncio.sleep`` directly, so tests move time by hand.
    """

    def now(self) -> float: ...

    def quality(self) -> ClockQuality: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


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

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def refresh(self) -> None:
        """Ask the host (D-Bus, flag file, kernel) off the loop; ``quality()`` then uses the answer.

        The daemon calls this before READY and every ``recheck_s`` until the clock is synchronised.
        """
        if self.policy is not SyncPolicy.AUTO or self._synced:
            return
        self._checked_at = time.monotonic()
        self._store(await host_clock_synchronised())

    def _store(self, host: bool | None) -> None:
        # Unknown host: trust the clock only if it is plausibly current.
        self._synced = host if host is not None else time.time() >= PLAUSIBLE_EPOCH

    def quality(self) -> ClockQuality:
        if self.policy is SyncPolicy.ASSUME_SYNCED:
            return ClockQuality.SYNCED
        if self.policy is SyncPolicy.ASSUME_UNSYNCED:
            return ClockQuality.UNSYNCED
        mono = time.monotonic()
        # Outside the daemon (nobody calls refresh): ask the cheap local sources now and then.
        # Once synchronised, stay synchronised: the kernel flag may flicker during slews.
        if self._synced is None or (not self._synced and mono - self._checked_at >= self.recheck_s * 3):
            self._checked_at = mono
            self._store(host_clock_synchronised_blocking())
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

    _sleepers: list[tuple[float, asyncio.Future[None]]] = field(default_factory=list, init=False, repr=False,
                                                                compare=False)

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return time.monotonic() if self.real_monotonic else self.mono

    async def sleep(self, seconds: float) -> None:
        """Returns once ``advance`` has moved the clock ``seconds`` on (real time with ``real_monotonic``)."""
        if self.real_monotonic or seconds <= 0:
            await asyncio.sleep(max(0.0, seconds) if self.real_monotonic else 0)
            return
        entry = (self.mono + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def quality(self) -> ClockQuality:
        return ClockQuality.SYNCED if self.synced else ClockQuality.UNSYNCED

    def advance(self, dt: float) -> None:
        self.t += dt
        self.mono += dt
        for due, fut in list(self._sleepers):
            if due <= self.mono and not fut.done():
                fut.set_result(None)

    async def run_for(self, seconds: float, step: float) -> None:
        """Advance ``seconds`` in steps of ``step``, letting every task that is due run after each."""
        end = self.mono + seconds
        while self.mono < end - 1e-12:
            self.advance(min(step, end - self.mono))
            for _ in range(5):  # a woken task may wake another (a sleep ends, then a queue is read)
                await asyncio.sleep(0)
