"""One patient's billing book: a pure state machine from dated readings to billable-service records.

``PatientBook.observe`` takes one reading whose time can be trusted and returns the records it
triggers; ``close_due`` closes periods whose end has passed.  Nothing here does I/O or reads a
clock, so the whole rule set is tested by feeding readings, and the async ledger only decides when
to persist ``to_state()``.

Records per patient (codes and thresholds from ``BillingSection``):

* set-up (99453): once per episode, ``billable`` as soon as ``setup_min_days`` days of data exist;
* device supply, per period: when the day count enters a tier (2 days → 99445) its service is
  ``accruing``; entering a higher tier (16 days → 99454) makes the lower one ``not_billable``
  (superseded) and the higher one ``eligible`` (it can no longer change, so upstream may settle
  early); when the period closes the active service becomes ``billable``.  Below the lowest tier
  nothing is emitted.  Each transition is a new record: same service key, version + 1.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.billing.days import DayTally, day_end, local_date, worst_clock
from gateway.billing.periods import Period, new_period
from gateway.billing.rules import open_status, record_key, service_key, tier_for
from gateway.config.billing import BillingSection
from gateway.records import BillingRecord, BillingStatus, ClockQuality

STATE_FORMAT = 1


class StateFormatError(ValueError):
    """Persisted billing state this version cannot read."""


@dataclass(slots=True)
class ServiceState:
    status: BillingStatus
    version: int


@dataclass(slots=True)
class OpenPeriod:
    period: Period
    days: dict[date, DayTally] = field(default_factory=dict)
    services: dict[str, ServiceState] = field(default_factory=dict)
    active: str | None = None  # code of the supply service the day count currently maps to


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    period: Period
    days: int
    code: str | None


@dataclass(frozen=True, slots=True)
class Step:
    """What one reading did: the records it triggered, and whether it started a new day of data."""

    records: list[BillingRecord]
    new_day: bool

    @property
    def must_persist(self) -> bool:
        # A new day or a record is a fact that must never be lost: saved before anything else happens.
        return self.new_day or bool(self.records)


_NOTHING = Step([], False)


class PatientBook:
    def __init__(
        self,
        patient: str,
        cfg: BillingSection,
        *,
        gateway_id: str,
        tz: ZoneInfo,
        enrolment: date | None = None,
        devices: frozenset[str] = frozenset(),
    ) -> None:
        self.patient = patient
        self.cfg = cfg
        self.gateway_id = gateway_id
        self.tz = tz
        self.enrolment = enrolment if cfg.period_anchor == "enrolment" else None
        self.devices = devices  # empty: any device of this patient counts
        self.episode_start: date | None = None
        # When the first of the patient's readings reached the hub (Unix s): monitoring began.
        self.monitoring_since: float | None = None
        self.setup: ServiceState | None = None
        self.setup_dates: list[date] = []
        self.opened: list[OpenPeriod] = []
        self.closed_through: date | None = None
        self.history: deque[ClosedPeriod] = deque(maxlen=cfg.history_periods)
        self.counters: dict[str, int] = {}

    # ---------------------------------------------------------------- readings

    def count(self, reason: str, n: int = 1) -> None:
        """Count a reading that did not count as data, by reason (shown by the billing CLI)."""
        self.counters[reason] = self.counters.get(reason, 0) + n

    def observe(self, device: str, t: float, clock: ClockQuality, n: int = 1, received: float | None = None) -> Step:
        """Account ``n`` readings from ``device`` at trusted Unix time ``t``, which reached the hub
        at ``received`` (None: not known, as in a simulation).  A device's stored readings from
        before monitoring began (``pre_monitoring_s`` before the first reception) are no day of data."""
        if self.devices and device not in self.devices:
            self.count("unassigned_device", n)
            return _NOTHING
        if received is not None and (self.monitoring_since is None or received < self.monitoring_since):
            self.monitoring_since = received
        if self.monitoring_since is not None and t < self.monitoring_since - self.cfg.pre_monitoring_s:
            self.count("before_monitoring", n)
            return _NOTHING
        records = self.close_due(t)
        d = local_date(t, self.tz)
        op = self._period_for(d, n)
        if op is None:
            return Step(records, False) if records else _NOTHING
        tally = op.days.get(d)
        new_day = tally is None
        if tally is None:
            tally = op.days[d] = DayTally(d)
        tally.add(t, device, clock, n)
        if new_day:
            records.extend(self._on_new_day(op, d, t, clock))
        return Step(records, new_day)

    def observe_span(self, device: str, first: float, last: float, n: int, clock: ClockQuality) -> Step:
        """Account ``n`` readings spread from ``first`` to ``last`` (a span released from the unsynced hold)."""
        # Held while the clock was unsynchronised: each reading was received at its own time.
        if n <= 1 or last <= first:
            return self.observe(device, first, clock, n, received=first)
        a = self.observe(device, first, clock, n - 1, received=first)
        b = self.observe(device, last, clock, 1, received=last)
        return Step(a.records + b.records, a.new_day or b.new_day)

    def close_due(self, now: float) -> list[BillingRecord]:
        """Close every period whose end (plus the grace for late readings) is before ``now``."""
        records: list[BillingRecord] = []
        while self.opened and day_end(self.opened[0].period.end, self.tz) + self.cfg.close_grace_s <= now:
            records.extend(self._close(self.opened.pop(0)))
        return records

    # ---------------------------------------------------------------- rules

    def _period_for(self, d: date, n: int) -> OpenPeriod | None:
        for op in self.opened:
            if d in op.period:
                return op
        if (
            len(self.opened) == 1
            and d < self.opened[0].period.start
            and (self.closed_through is None or d > self.closed_through)
        ):
            early = self._before_first_open(d)
            if early is not None:
                return early
        last_end = self.opened[-1].period.end if self.opened else self.closed_through
        if last_end is not None and d <= last_end:
            # Dated inside a closed period, or in a gap before the open one: its records are final.
            self.count("late", n)
            return None
        period = new_period(d, self.cfg.period_days, self.enrolment)
        if period is None:
            self.count("before_enrolment", n)
            return None
        if last_end is not None and period.start <= last_end:  # anchor changed in config meanwhile
            period = Period(date.fromordinal(last_end.toordinal() + 1), period.end)
        if self.episode_start is None:
            self.episode_start = self.enrolment or period.start
        op = OpenPeriod(period)
        self.opened.append(op)
        return op

    def _before_first_open(self, d: date) -> OpenPeriod | None:
        """A day of data after every closed period and before the one open period: readings that came
        out of order (a cuff's upload after a week offline, behind a live oximeter's reading).  In
        time order it would have opened a period itself, and so it does now, where that changes no
        record already emitted: a period of its own when that ends before the open one starts, or
        the open one starting at ``d`` instead (``first_data`` anchor) while it has emitted nothing
        and all its days still fall in it.  Otherwise None: the day is late."""
        first = self.opened[0]
        period = new_period(d, self.cfg.period_days, self.enrolment)
        if period is None:
            return None
        if period.end < first.period.start:
            op = OpenPeriod(period)
            self.opened.insert(0, op)
            if self.episode_start is not None and self.setup is None and period.start < self.episode_start:
                self.episode_start = period.start
            return op
        setup_in_it = (
            self.setup is not None and self.episode_start is not None and self.episode_start >= first.period.start
        )
        if self.enrolment is not None or first.services or setup_in_it or not all(x in period for x in first.days):
            return None
        if self.episode_start == first.period.start:
            self.episode_start = period.start
        first.period = period
        return first

    def _on_new_day(self, op: OpenPeriod, d: date, t: float, clock: ClockQuality) -> list[BillingRecord]:
        records: list[BillingRecord] = []
        if self.cfg.setup_code and self.setup is None:
            # The set-up's days of data are those of one period, as device supply's are: days of
            # an earlier period that fell short do not add up with this one's.
            self.setup_dates = [x for x in self.setup_dates if x in op.period]
            self.setup_dates.append(d)
            if len(self.setup_dates) >= self.cfg.setup_min_days:
                self.setup = ServiceState(BillingStatus.BILLABLE, 1)
                records.append(self._setup_record(op, t, clock))
        n = len(op.days)
        tier = tier_for(n, self.cfg)
        if tier is None:
            return records
        status = open_status(n, tier, self.cfg)
        if op.active is not None and op.active != tier.code:
            records.append(
                self._emit(op, op.active, BillingStatus.NOT_BILLABLE, t, clock, f"superseded by {tier.code}")
            )
        current = op.services.get(tier.code)
        if current is None or current.status != status:
            records.append(self._emit(op, tier.code, status, t, clock))
        op.active = tier.code
        return records

    def _close(self, op: OpenPeriod) -> list[BillingRecord]:
        records: list[BillingRecord] = []
        if op.active is not None:
            flags = {q for tally in op.days.values() for q in tally.clock_flags}
            end = day_end(op.period.end, self.tz)
            records.append(self._emit(op, op.active, BillingStatus.BILLABLE, end, worst_clock(flags)))
        self.closed_through = op.period.end
        self.history.append(ClosedPeriod(op.period, len(op.days), op.active))
        return records

    # ---------------------------------------------------------------- records

    def _emit(
        self, op: OpenPeriod, code: str, status: BillingStatus, t: float, clock: ClockQuality, reason: str = ""
    ) -> BillingRecord:
        prev = op.services.get(code)
        version = prev.version + 1 if prev else 1
        op.services[code] = ServiceState(status, version)
        tallies = [op.days[d] for d in sorted(op.days)]
        return self._record(code, status, version, op.period.start, op.period.end, tallies, t, clock, reason)

    def _setup_record(self, op: OpenPeriod, t: float, clock: ClockQuality) -> BillingRecord:
        assert self.setup is not None and self.cfg.setup_code is not None and self.episode_start is not None
        tallies = [p.days[d] for d in self.setup_dates for p in self.opened if d in p.days]
        return self._record(
            self.cfg.setup_code,
            self.setup.status,
            self.setup.version,
            self.episode_start,
            op.period.end,
            tallies,
            t,
            clock,
            f"first {len(self.setup_dates)} day(s) of data",
            dates=[d.isoformat() for d in self.setup_dates],
        )

    def _record(
        self,
        code: str,
        status: BillingStatus,
        version: int,
        start: date,
        end: date,
        tallies: list[DayTally],
        t: float,
        clock: ClockQuality,
        reason: str,
        dates: list[str] | None = None,
    ) -> BillingRecord:
        key = service_key(self.patient, code, start.isoformat())
        return BillingRecord(
            key=record_key(key, version),
            gateway_id=self.gateway_id,
            patient=self.patient,
            time=datetime.fromtimestamp(t, tz=UTC),
            clock=clock,
            service_key=key,
            version=version,
            code=code,
            status=status,
            period_start=start.isoformat(),
            period_end=end.isoformat(),
            timezone=self.tz.key,
            qualifying_days=len(dates) if dates is not None else len(tallies),
            dates=dates if dates is not None else [x.day.isoformat() for x in tallies],
            devices=sorted({dev for x in tallies for dev in x.devices}),
            evidence=[x.evidence() for x in tallies],
            reason=reason,
        )

    # ---------------------------------------------------------------- views

    @property
    def current(self) -> OpenPeriod | None:
        return self.opened[-1] if self.opened else None

    def all_dates(self) -> list[date]:
        return sorted(d for op in self.opened for d in op.days)

    # ---------------------------------------------------------------- persistence

    def to_state(self) -> bytes:
        obj: dict[str, Any] = {
            "format": STATE_FORMAT,
            "patient": self.patient,
            "timezone": self.tz.key,
            "episode_start": _iso(self.episode_start),
            "monitoring_since": self.monitoring_since,
            "setup": None if self.setup is None else [self.setup.status.value, self.setup.version],
            "setup_dates": [d.isoformat() for d in self.setup_dates],
            "open": [
                {
                    "start": op.period.start.isoformat(),
                    "end": op.period.end.isoformat(),
                    "days": [op.days[d].to_json() for d in sorted(op.days)],
                    "services": {c: [s.status.value, s.version] for c, s in op.services.items()},
                    "active": op.active,
                }
                for op in self.opened
            ],
            "closed_through": _iso(self.closed_through),
            "history": [[h.period.start.isoformat(), h.period.end.isoformat(), h.days, h.code] for h in self.history],
            "counters": self.counters,
        }
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

    def load_state(self, raw: bytes) -> None:
        """Restore what ``to_state`` saved (rules and zone keep coming from the current config)."""
        try:
            obj = json.loads(raw)
            if obj.get("format") != STATE_FORMAT:
                raise StateFormatError(f"billing state format {obj.get('format')!r} is not {STATE_FORMAT}")
            self.episode_start = _date(obj["episode_start"])
            since = obj.get("monitoring_since")
            if "monitoring_since" not in obj and self.episode_start is not None:  # saved before it was kept
                since = day_end(date.fromordinal(self.episode_start.toordinal() - 1), self.tz)
            self.monitoring_since = None if since is None else float(since)
            self.setup = None if obj["setup"] is None else ServiceState(BillingStatus(obj["setup"][0]), obj["setup"][1])
            self.setup_dates = [date.fromisoformat(d) for d in obj["setup_dates"]]
            self.opened = []
            for o in obj["open"]:
                op = OpenPeriod(Period(date.fromisoformat(o["start"]), date.fromisoformat(o["end"])))
                for tj in o["days"]:
                    tally = DayTally.from_json(tj)
                    op.days[tally.day] = tally
                op.services = {c: ServiceState(BillingStatus(s), int(v)) for c, (s, v) in o["services"].items()}
                op.active = o["active"]
                self.opened.append(op)
            self.closed_through = _date(obj["closed_through"])
            self.history.clear()
            for s, e, n, code in obj["history"]:
                self.history.append(ClosedPeriod(Period(date.fromisoformat(s), date.fromisoformat(e)), n, code))
            self.counters = {str(k): int(v) for k, v in obj["counters"].items()}
        except StateFormatError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise StateFormatError(f"billing state of patient {self.patient!r} is unreadable: {e}") from e


def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


def _date(s: str | None) -> date | None:
    return None if s is None else date.fromisoformat(s)
