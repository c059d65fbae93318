"""Supervision of device sessions: one task per device, retried with jittered exponential backoff.

This is the one place that retries anything device-related.  A session that fails — a typed driver
error or a bug in a driver — is logged, reported as a device event, and retried; it never disturbs
the other sessions.  A session that ran healthily for a while before dropping starts over with a
fresh (short) backoff, so a device that reboots once a day reconnects in about a second.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from gateway import device_tags
from gateway.clock import Clock
from gateway.driver_api import (
    DeviceContext,
    DriverConfigError,
    DriverError,
    DriverFinished,
    DriverSettings,
    DriverSpec,
)
from gateway.records import DeviceEvent, DeviceState, Reading

ReadingSink = Callable[[str, Reading], Awaitable[None]]
"""(patient, reading) -> None; must not raise (the daemon's sink logs its own failures)."""


class SessionState(enum.StrEnum):
    CONNECTING = "connecting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FINISHED = "finished"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Assignment:
    """A device as configured: which patient it belongs to and its driver settings."""

    patient: str
    settings: DriverSettings

    @property
    def driver(self) -> str:
        return str(getattr(self.settings, "driver", ""))


@dataclass
class SessionInfo:
    device_id: str
    patient: str
    driver: str
    state: SessionState = SessionState.CONNECTING
    connects: int = 0
    failures: int = 0
    readings: int = 0
    last_error: str | None = None
    last_reading_mono: float | None = None


class _RanHealthy(Exception):
    """Internal: the session dropped after running long enough to deserve a fresh backoff."""


@dataclass
class BackoffPolicy:
    initial_s: float = 1.0
    max_s: float = 60.0
    config_error_s: float = 60.0  # a wrong port path is not fixed by hammering it
    healthy_after_s: float = 60.0


class DeviceSession:
    def __init__(
        self,
        assignment: Assignment,
        spec: DriverSpec,
        ctx: DeviceContext,
        sink: ReadingSink,
        *,
        backoff: BackoffPolicy,
        clock: Clock,
    ) -> None:
        self.assignment = assignment
        self.clock = clock
        self.spec = spec
        self.ctx = ctx
        self.sink = sink
        self.backoff = backoff
        self.info = SessionInfo(ctx.device_id, assignment.patient, spec.name)
        self.log = ctx.log
        # initial_s * 2**n plus up to initial_s of jitter, capped: sessions failing together spread out.
        self._exponential = wait_exponential_jitter(
            multiplier=backoff.initial_s, max=backoff.max_s, jitter=backoff.initial_s
        )

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(device=self.ctx.device_id, patient=self.assignment.patient)
        try:
            while True:
                try:
                    retrying = AsyncRetrying(
                        retry=retry_if_exception(lambda e: isinstance(e, Exception) and not _final(e)),
                        wait=self._wait,
                        sleep=self.clock.sleep,
                        before_sleep=self._before_sleep,
                        reraise=True,
                    )
                    async for attempt in retrying:
                        with attempt:
                            await self._session()
                except DriverFinished:
                    self.info.state = SessionState.FINISHED
                    self.log.info("device_session_finished")
                    return
                except _RanHealthy:
                    await self.clock.sleep(self.backoff.initial_s * 0.5)
        finally:
            if self.info.state is not SessionState.FINISHED:
                self.info.state = SessionState.STOPPED

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, DriverConfigError):
            return self.backoff.config_error_s
        return float(self._exponential(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.info.state = SessionState.BACKOFF
        self.info.failures += 1
        self.info.last_error = _describe(exc)
        delay = state.next_action.sleep if state.next_action else 0.0
        if isinstance(exc, DriverError):
            self.log.warning(
                "device_retry", error=self.info.last_error, attempt=state.attempt_number, retry_in_s=round(delay, 2)
            )
        else:  # a bug in a driver: keep the traceback, keep the daemon
            self.log.error(
                "device_driver_crashed", error=self.info.last_error, retry_in_s=round(delay, 2), exc_info=exc
            )

    async def _session(self) -> None:
        ctx = self.ctx
        self.info.state = SessionState.CONNECTING
        factory = self.spec.load()
        driver = factory(ctx, self.assignment.settings)
        connected_at: float | None = None
        linked = False  # data can flow: the session's link, or a visit an own-connection driver reported
        own = False
        try:
            async with driver:
                connected_at = self.clock.monotonic()
                self.info.connects += 1
                self.info.state = SessionState.RUNNING
                own = driver.reports_own_connection
                linked = not own
                if own:
                    # Nothing is connected yet (a passive BLE cuff comes by when it has a reading): say
                    # "connected" only for a visit the driver reports, when data can flow.
                    self.log.info("device_waiting", driver=self.spec.name)
                else:
                    self.log.info("device_connected", driver=self.spec.name)
                    await self.sink(
                        self.assignment.patient,
                        DeviceEvent(ctx.device_id, DeviceState.CONNECTED, ctx.clock.now(), clock=ctx.clock.quality()),
                    )
                async for reading in driver.readings():
                    if own and isinstance(reading, DeviceEvent):
                        linked = reading.state is DeviceState.CONNECTED
                        if linked:
                            self.log.info("device_connected", driver=self.spec.name, detail=reading.detail)
                    self.info.readings += 1
                    self.info.last_reading_mono = self.clock.monotonic()
                    await self.sink(self.assignment.patient, reading)
            raise DriverFinished("driver ended its stream")
        except DriverFinished:
            raise
        except Exception as e:
            if connected_at is not None and linked:
                self.log.warning("device_disconnected", error=_describe(e))
                await self.sink(
                    self.assignment.patient,
                    DeviceEvent(
                        ctx.device_id,
                        DeviceState.DISCONNECTED,
                        ctx.clock.now(),
                        detail=reason_code(e),
                        clock=ctx.clock.quality(),
                    ),
                )
            if connected_at is not None and self.clock.monotonic() - connected_at >= self.backoff.healthy_after_s:
                raise _RanHealthy() from e
            raise


def _final(e: BaseException) -> bool:
    return isinstance(e, DriverFinished | _RanHealthy) or (isinstance(e, DriverError) and not e.retryable)


def reason_code(e: BaseException) -> str:
    """What goes upstream about a failure: the driver's reason code, never the exception's text
    (which may quote a device address or a library's message; the journal has it, scrubbed)."""
    return e.reason if isinstance(e, DriverError) else "driver_crashed"


def _describe(e: BaseException | None) -> str:
    """The failure in words for the journal and local status, device identifiers scrubbed."""
    if e is None:
        return ""
    text = device_tags.current().scrub_text(str(e))
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass
class ReloadReport:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class Supervisor:
    """Owns the session tasks; ``apply`` makes the running set match a configuration."""

    def __init__(
        self,
        *,
        specs: Mapping[str, DriverSpec],
        sink: ReadingSink,
        clock: Clock,
        context_for: Callable[[str, Assignment], DeviceContext],
        backoff: BackoffPolicy | None = None,
    ) -> None:
        self.specs = specs
        self.sink = sink
        self.clock = clock
        self.context_for = context_for
        self.backoff = backoff or BackoffPolicy()
        self._sessions: dict[str, tuple[Assignment, DeviceSession, asyncio.Task[None]]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self.log = structlog.get_logger()

    def apply(self, wanted: Mapping[str, Assignment]) -> ReloadReport:
        report = ReloadReport()
        for device_id in list(self._sessions):
            current = self._sessions[device_id][0]
            if device_id not in wanted:
                self._stop(device_id)
                report.removed.append(device_id)
            elif wanted[device_id] != current:
                self._stop(device_id)
                report.restarted.append(device_id)
        for device_id, assignment in wanted.items():
            if device_id in self._sessions:
                report.unchanged.append(device_id)
                continue
            self._start(device_id, assignment)
            if device_id not in report.restarted:
                report.added.append(device_id)
        return report

    def _start(self, device_id: str, assignment: Assignment) -> None:
        spec = self.specs[assignment.driver]
        ctx = self.context_for(device_id, assignment)
        session = DeviceSession(assignment, spec, ctx, self.sink, backoff=self.backoff, clock=self.clock)
        task = asyncio.create_task(session.run(), name=f"device:{device_id}")
        self._sessions[device_id] = (assignment, session, task)

    def _stop(self, device_id: str) -> None:
        _, _, task = self._sessions.pop(device_id)
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def stop_all(self, grace_s: float = 3.0) -> None:
        for device_id in list(self._sessions):
            self._stop(device_id)
        pending = list(self._stopping)
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace_s)
            for t in still:
                self.log.error("device_stop_timeout", task=t.get_name())

    def stragglers(self) -> list[asyncio.Task[None]]:
        """Session tasks cancelled and not yet ended (``stop_all`` names those past its grace)."""
        return [t for t in self._stopping if not t.done()]

    def sessions(self) -> list[SessionInfo]:
        return [s.info for _, s, _ in self._sessions.values()]

    def task_failures(self) -> dict[str, BaseException]:
        """Sessions whose task died with an error instead of being retried (a driver's non-retryable
        error, or a bug here); the daemon names them in its STATUS= line."""
        out: dict[str, Any] = {}
        for device_id, (_, _, task) in self._sessions.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                out[device_id] = task.exception()
        return out
