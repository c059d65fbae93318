"""The billing ledger inside the daemon: per-patient books, the unsynced-clock hold, and persistence.

The rules live in ``PatientBook`` (pure); this module decides *when* state is saved.  A reading that
starts a new day of data, or triggers a record, is saved at once, in the same outbox transaction as
the records it triggers — so "day counted" and "record queued" can never be separated by a crash.
Readings of a day already counted only bump counters in memory, saved at most every
``persist_interval_s``: losing some of those to a crash changes evidence counts, never a day or a key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog

from gateway.billing.book import PatientBook, StateFormatError, Step
from gateway.billing.days import host_zone
from gateway.billing.hold import UnsyncedHold
from gateway.billing.views import PatientBillingView, view_of
from gateway.clock import PLAUSIBLE_EPOCH, Clock
from gateway.config.billing import BillingSection
from gateway.outbox.types import OutboxError
from gateway.records import BillingRecord, ClockQuality

STATE_PREFIX = "billing/"

# How old an unsynced reading may be when it reaches the ledger before its age is distrusted
# (the pipeline hands readings over within seconds; a bigger gap means the clock jumped meanwhile).
_MAX_TRUSTED_AGE_S = 3600.0


def state_key(patient: str) -> str:
    return f"{STATE_PREFIX}{patient}/book"


class BillingStore(Protocol):
    """What the ledger needs of the outbox (records and state committed in one transaction)."""

    def submit(
        self, record: BillingRecord, *, state: Mapping[str, bytes | None] | None = None
    ) -> asyncio.Future[None]: ...

    def submit_state(self, state: Mapping[str, bytes | None]) -> asyncio.Future[None]: ...

    async def load_state(self, prefix: str) -> dict[str, bytes]: ...


@dataclass(frozen=True)
class PatientBilling:
    """What the ledger needs to know of one patient from the config."""

    timezone: ZoneInfo
    enrolment: date | None = None
    devices: frozenset[str] = field(default_factory=frozenset)


def patient_zones(config: Any) -> dict[str, ZoneInfo]:
    """Each patient's zone in a validated gateway config (``ConfigBase``): ``patients[].timezone``,
    else ``billing.timezone``, else the hub's.  Billing days are cut there, and device clocks read."""
    billing: BillingSection = config.billing
    default_zone = ZoneInfo(billing.timezone) if billing.timezone else host_zone()
    return {p.id: ZoneInfo(p.timezone) if p.timezone else default_zone for p in config.patients}


def patients_from_config(config: Any) -> dict[str, PatientBilling]:
    """``PatientBilling`` for every patient of a validated gateway config (``ConfigBase``)."""
    billing: BillingSection = config.billing
    zones = patient_zones(config)
    return {
        p.id: PatientBilling(
            timezone=zones[p.id],
            enrolment=billing.enrolment.get(p.id),
            devices=frozenset(d.id for d in p.devices),
        )
        for p in config.patients
    }


def new_book(patient: str, info: PatientBilling, cfg: BillingSection, gateway_id: str) -> PatientBook:
    return PatientBook(
        patient, cfg, gateway_id=gateway_id, tz=info.timezone, enrolment=info.enrolment, devices=info.devices
    )


class BillingLedger:
    def __init__(
        self, store: BillingStore, cfg: BillingSection, books: dict[str, PatientBook], clock: Clock, gateway_id: str
    ) -> None:
        self._store = store
        self.gateway_id = gateway_id
        self.cfg = cfg
        self._books = books
        self._clock = clock
        self._hold = UnsyncedHold(cfg.unsynced_hold_max)
        self._dirty: set[str] = set()
        self._saved_at: dict[str, float] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._unsent: dict[str, list[BillingRecord]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._log = structlog.get_logger("gateway.billing")
        self.unknown_patient = 0

    @classmethod
    async def open(
        cls,
        outbox: BillingStore,
        cfg: BillingSection,
        *,
        gateway_id: str,
        patients: Mapping[str, PatientBilling],
        clock: Clock,
    ) -> BillingLedger:
        states = await outbox.load_state(STATE_PREFIX)
        books: dict[str, PatientBook] = {}
        log = structlog.get_logger("gateway.billing")
        for patient, info in patients.items():
            book = new_book(patient, info, cfg, gateway_id)
            raw = states.get(state_key(patient))
            if raw is not None:
                try:
                    book.load_state(raw)
                except StateFormatError as e:
                    # Starting afresh could emit a second set-up or period under a new key: refuse loudly.
                    raise StateFormatError(f"{e}; refusing to start billing over it") from e
            books[patient] = book
        log.info("billing_ledger_open", patients=len(books), restored=sum(state_key(p) in states for p in books))
        return cls(outbox, cfg, books, clock, gateway_id)

    async def reconfigure(self, cfg: BillingSection, patients: Mapping[str, PatientBilling]) -> None:
        """Apply a reloaded config: rules, zones, devices; a patient new to this run gets its saved state.

        A removed patient's book stays (its counters are still saved); days already counted keep the
        zone they were cut in.
        """
        states: dict[str, bytes] | None = None
        for patient, info in patients.items():
            book = self._books.get(patient)
            if book is None:
                if states is None:
                    states = await self._store.load_state(STATE_PREFIX)
                book = new_book(patient, info, cfg, self.gateway_id)
                raw = states.get(state_key(patient))
                if raw is not None:
                    try:
                        book.load_state(raw)
                    except StateFormatError as e:
                        # Billing this patient afresh could repeat a set-up under a new key: leave it out.
                        self._log.error("billing_state_unreadable", patient=patient, error=str(e))
                        continue
                self._books[patient] = book
            else:
                book.cfg = cfg
                book.tz = info.timezone
                book.devices = info.devices
                book.enrolment = info.enrolment if cfg.period_anchor == "enrolment" else None
        self.cfg = cfg

    # ---------------------------------------------------------------- hot path

    async def on_reading(self, patient: str, device: str, t: float, clock: ClockQuality) -> None:
        """Account one valid physiologic reading already accepted by the outbox."""
        if not self.cfg.enabled:
            return
        book = self._books.get(patient)
        if book is None:
            self.unknown_patient += 1
            return
        host_synced = self._clock.quality() is ClockQuality.SYNCED
        if clock is ClockQuality.UNSYNCED:
            self._hold_reading(patient, device, t, host_synced)
            if host_synced:
                await self._release_hold()
            return
        if t < PLAUSIBLE_EPOCH:
            book.count("implausible_time")
            return
        if host_synced and t > self._clock.now() + self.cfg.max_future_s:
            book.count("future_time")
            return
        if host_synced and len(self._hold):
            await self._release_hold()
        # Stamped by the hub, a reading's time is when it came; stamped by its device (a stored
        # reading, uploaded later), it came now.
        received = t if clock is ClockQuality.SYNCED else self._clock.now() if host_synced else None
        await self._save(patient, book.observe(device, t, clock, received=received))

    async def tick(self, now: float) -> None:
        """Close periods whose end has passed; save counters left waiting."""
        if self.cfg.enabled and self._clock.quality() is ClockQuality.SYNCED:
            if len(self._hold):
                await self._release_hold()
            for patient, book in list(self._books.items()):  # a reload may add books meanwhile
                records = book.close_due(now)
                if records:
                    await self._save(patient, Step(records, False))
        for patient in list(self._unsent):
            await self._save(patient, Step([], False), retry=True)
        mono = self._clock.monotonic()
        for patient in list(self._dirty):
            if mono - self._saved_at.get(patient, -1e18) >= self.cfg.persist_interval_s:
                self._save_in_background(patient)

    async def flush(self) -> None:
        """Save every pending counter and wait for all saves (call before shutting the outbox)."""
        for patient in list(self._unsent):
            await self._save(patient, Step([], False), retry=True)
        for patient in list(self._dirty):
            self._save_in_background(patient)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def summary(self) -> list[PatientBillingView]:
        return [view_of(book, held=self._hold.held_readings(p)) for p, book in sorted(self._books.items())]

    # ---------------------------------------------------------------- internals

    def _hold_reading(self, patient: str, device: str, t: float, host_synced: bool) -> None:
        mono = self._clock.monotonic()
        if not host_synced:
            # Same (wrong) wall-clock base for the reading and the host: their difference is its age.
            age = self._clock.now() - t
            if 0.0 <= age <= _MAX_TRUSTED_AGE_S:
                mono -= age
        self._hold.add(patient, device, mono)

    async def _release_hold(self) -> None:
        spans = self._hold.release(self._clock.now(), self._clock.monotonic())
        steps: dict[str, list[Step]] = {}
        for span in spans:
            book = self._books[span.patient]
            steps.setdefault(span.patient, []).append(
                book.observe_span(span.device, span.first, span.last, span.count, ClockQuality.CORRECTED)
            )
        self._log.info("billing_hold_released", spans=len(spans), readings=sum(s.count for s in spans))
        # Every book has moved on, and they are saved one after the other: until its turn, each
        # patient's records wait with those refused earlier, so that no background save of its
        # state gets ahead of them meanwhile (a crash would then restart from a state that says a
        # set-up was sent, and it would never be).
        for patient, done in steps.items():
            records = [r for s in done for r in s.records]
            if records:
                self._unsent.setdefault(patient, []).extend(records)
        for patient, done in steps.items():
            await self._save(patient, Step([], any(s.new_day for s in done)), retry=True)

    async def _save(self, patient: str, step: Step, *, retry: bool = False) -> None:
        if not (step.must_persist or retry):
            self._dirty.add(patient)
            if self._clock.monotonic() - self._saved_at.get(patient, -1e18) >= self.cfg.persist_interval_s:
                self._save_in_background(patient)
            return
        # One commit at a time per patient: a later state must never reach the disk while records it
        # accounts for could still be refused.
        async with self._locks.setdefault(patient, asyncio.Lock()):
            await self._commit(patient, step.records)

    async def _commit(self, patient: str, new: list[BillingRecord]) -> None:
        # Records refused earlier go first, with this save (retried from tick, not on the hot path).
        records = self._unsent.pop(patient, []) + new
        state = {state_key(patient): self._books[patient].to_state()}
        self._dirty.discard(patient)
        self._saved_at[patient] = self._clock.monotonic()
        if records:
            # The state rides with the last record: it is never on disk before every record it accounts
            # for.  Should an earlier record commit alone and the host die, the book restarts from the
            # previous state and emits that record again under the same key — a no-op for the outbox.
            futures = [self._store.submit(r) for r in records[:-1]]
            futures.append(self._store.submit(records[-1], state=state))
        else:
            futures = [self._store.submit_state(state)]
        try:
            await asyncio.gather(*futures)
        except OutboxError as e:
            # Outbox full or closing: the book has moved on in memory, so keep its records and save
            # them (same keys) with the state on the next tick or new day.  Never dropped.
            if records:
                self._unsent[patient] = records
            self._dirty.add(patient)
            self._log.error("billing_save_refused", patient=patient, records=len(records), error=repr(e))
            return
        for r in records:
            self._log.info(
                "billing_record",
                patient=patient,
                key=r.key,
                code=r.code,
                status=r.status.value,
                days=r.qualifying_days,
            )

    def _save_in_background(self, patient: str) -> None:
        lock = self._locks.get(patient)
        if patient in self._unsent or (lock is not None and lock.locked()):
            return  # the state must not get ahead of records not yet committed (it stays dirty)
        self._dirty.discard(patient)
        self._saved_at[patient] = self._clock.monotonic()
        fut = self._store.submit_state({state_key(patient): self._books[patient].to_state()})
        self._background.add(fut)
        fut.add_done_callback(self._background_done)

    def _background_done(self, fut: asyncio.Future[None]) -> None:
        self._background.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            self._log.error("billing_state_save_failed", error=repr(fut.exception()))
