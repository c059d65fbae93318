"""Alarm rules: thresholds with minimum duration and hysteresis, and technical alarms.

Each alarm is exactly one *raise* and one *clear* transition sharing an ``alarm_id``.  A threshold
alarm raises only after the value has stayed beyond ``raise_at`` for ``min_duration_s`` and clears
only once the value is back inside ``clear_at`` — so a signal wandering around one threshold cannot
make the alarm flap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.processing import Limit, VitalLimits
from gateway.records import AlarmEvent, Severity, Vital


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    alarm_id: str
    event: AlarmEvent
    condition: str
    technical: bool
    severity: Severity
    time: float
    vital: Vital | None = None
    value: float | None = None
    threshold: float | None = None
    device: str | None = None
    detail: str = ""


@dataclass(slots=True)
class _ThresholdState:
    pending_since: float | None = None
    active_id: str | None = None
    worst: float | None = None
    last_t: float | None = None  # the latest reading this rule has seen
    last_id: str | None = None  # the last id it gave: a new episode never reuses it


class ThresholdRule:
    """One direction ('low' or 'high') of one vital's limit, for one device's readings, as a small
    state machine.

    A reading older than one the rule has already seen changes nothing: a buffered reading that
    arrives late must not clear a live alarm (nor date its clear before its raise).  The minimum
    duration counts over readings that keep coming: after a silence longer than it, the wait starts
    again, since nothing says the value stayed beyond the limit meanwhile.  ``immediate`` readings
    (a spot-check device's: a cuff, a scale, a spot-check oximeter) raise at once, since no further
    reading may come for hours to confirm them."""

    def __init__(
        self,
        scope: str,
        vital: Vital,
        direction: str,
        limit: Limit,
        condition: str | None = None,
        device: str | None = None,
    ) -> None:
        self.scope = scope
        self.vital = vital
        self.direction = direction
        self.limit = limit
        self.condition = condition or f"{vital.value}_{direction}"
        self.device = device
        self._s = _ThresholdState()
        self.retired = False  # removed from the config: may still clear, never raises again

    def _beyond(self, v: float) -> bool:
        return v < self.limit.raise_at if self.direction == "low" else v > self.limit.raise_at

    def _recovered(self, v: float) -> bool:
        clear = self.limit.clear_at if self.limit.clear_at is not None else self.limit.raise_at
        return v >= clear if self.direction == "low" else v <= clear

    @property
    def active(self) -> bool:
        return self._s.active_id is not None

    def observe(self, value: float, t: float, device: str | None, immediate: bool = False) -> AlarmTransition | None:
        s = self._s
        if s.last_t is not None and t < s.last_t:
            return None
        silent = s.last_t is not None and t - s.last_t > self.limit.min_duration_s
        s.last_t = t
        if s.active_id is not None:
            if self._recovered(value):
                alarm_id, s.active_id, s.pending_since = s.active_id, None, None
                worst, s.worst = s.worst, None
                detail = f"worst {worst:g}" if worst is not None else ""
                return self._transition(alarm_id, AlarmEvent.CLEARED, t, value, device, detail)
            s.worst = value if s.worst is None else self._worse(value, s.worst)
            return None
        if self.retired or not self._beyond(value):
            s.pending_since = None
            return None
        if s.pending_since is None or silent:
            s.pending_since = t
        if immediate or t - s.pending_since >= self.limit.min_duration_s:
            s.active_id = self._new_id(t)
            s.worst = value
            return self._transition(s.active_id, AlarmEvent.RAISED, t, value, device)
        return None

    def _new_id(self, t: float) -> str:
        who = "" if self.device is None else f"{self.device}/"
        alarm_id = base = f"{self.scope}/{self.condition}/{who}{int(t * 1000)}"
        k = 1
        while alarm_id == self._s.last_id:  # raised, cleared and raised again within a millisecond
            k += 1
            alarm_id = f"{base}-{k}"
        self._s.last_id = alarm_id
        return alarm_id

    def withdraw(self, t: float, why: str) -> AlarmTransition | None:
        """Clear the raised alarm, if any, whose source left the config: nothing else ever would."""
        s = self._s
        if s.active_id is None:
            return None
        alarm_id, s.active_id, s.pending_since, s.worst = s.active_id, None, None, None
        return self._transition(alarm_id, AlarmEvent.CLEARED, t, None, self.device, why)

    def take_over(self, prev: ThresholdRule) -> None:
        """Go on from ``prev``'s state (a limit changed): an active alarm stays raised under its id
        and clears by this rule; a pending wait keeps its start."""
        self._s = prev._s

    def interrupt(self) -> None:
        """The signal became invalid: a pending (not yet raised) episode must start again."""
        self._s.pending_since = None

    def _worse(self, a: float, b: float) -> float:
        return min(a, b) if self.direction == "low" else max(a, b)

    def _transition(
        self, alarm_id: str, event: AlarmEvent, t: float, value: float | None, device: str | None, detail: str = ""
    ) -> AlarmTransition:
        return AlarmTransition(
            alarm_id=alarm_id,
            event=event,
            condition=self.condition,
            technical=False,
            severity=Severity(self.limit.severity),
            time=t,
            vital=self.vital,
            value=value,
            threshold=self.limit.raise_at,
            device=device,
            detail=detail,
        )


def _rules_of(scope: str, vital: Vital, lim: VitalLimits | None, device: str | None) -> list[ThresholdRule]:
    if lim is None:
        return []
    return [
        ThresholdRule(scope, vital, direction, limit, device=device)
        for direction, limit in (("low", lim.low), ("high", lim.high))
        if limit is not None
    ]


class AlarmEngine:
    """All alarm state of one patient: threshold rules per vital and device, and technical conditions.

    Each device's readings of a vital have their own rules: an oximeter's bradycardia is not
    cleared, nor its wait broken, by a cuff's pulse taken meanwhile."""

    def __init__(self, scope: str, limits: Mapping[str, VitalLimits]) -> None:
        self.scope = scope
        self._limits: dict[Vital, VitalLimits] = {Vital(name): lim for name, lim in limits.items()}
        self._rules: dict[tuple[Vital, str | None], list[ThresholdRule]] = {}
        self._technical: dict[tuple[str, str | None], str] = {}
        self._technical_since: dict[tuple[str, str | None], float] = {}  # raise times (this process's)
        self._technical_kind: dict[tuple[str, str | None], tuple[Severity, bool]] = {}  # as raised

    def _rules_for(self, vital: Vital, device: str | None) -> list[ThresholdRule]:
        rules = self._rules.get((vital, device))
        if rules is None:
            rules = self._rules[(vital, device)] = _rules_of(self.scope, vital, self._limits.get(vital), device)
            # Alarms restored from a state saved before rules were kept per device: the first
            # device to report the vital carries them on, so each still gets its one clear.
            orphans = self._rules.pop((vital, None), []) if device is not None else []
            for orphan in orphans:
                same = next((r for r in rules if r.direction == orphan.direction), None)
                if same is not None:
                    same.take_over(orphan)
                else:
                    orphan.device = device
                    rules.append(orphan)
        return rules

    def update_limits(self, limits: Mapping[str, VitalLimits]) -> None:
        """New limits (config reload): alarms already raised stay raised under the same id and
        clear by the new rule, so each still gets exactly one clear, and a pending wait keeps its
        start; a rule that no longer exists keeps its active alarm until the value recovers by
        the old rule."""
        self._limits = {Vital(name): lim for name, lim in limits.items()}
        for (vital, device), old_rules in list(self._rules.items()):
            old = {r.direction: r for r in old_rules}
            rules = _rules_of(self.scope, vital, self._limits.get(vital), device)
            for rule in rules:
                prev = old.pop(rule.direction, None)
                if prev is not None:
                    rule.take_over(prev)
            for prev in old.values():
                if prev.active:
                    prev.retired = True
                    rules.append(prev)
            self._rules[(vital, device)] = rules

    def observe(
        self, vital: Vital, value: float, t: float, device: str | None = None, *, immediate: bool = False
    ) -> list[AlarmTransition]:
        out = []
        for rule in self._rules_for(vital, device):
            tr = rule.observe(value, t, device, immediate)
            if tr is not None:
                out.append(tr)
        return out

    def invalid(self, vital: Vital, device: str | None = None) -> None:
        """A reading of ``vital`` (from ``device``; None: from any) was rejected: do not let a gap
        count toward a minimum duration."""
        keys = [(vital, device)] if device is not None else [k for k in self._rules if k[0] is vital]
        for key in keys:
            for rule in self._rules.get(key, ()):
                rule.interrupt()

    def technical(
        self,
        condition: str,
        active: bool,
        t: float,
        *,
        device: str | None = None,
        severity: Severity = Severity.MEDIUM,
        detail: str = "",
        technical: bool = True,
    ) -> list[AlarmTransition]:
        """Raise or clear a condition (idempotent: repeated raises yield one alarm).  Technical by
        default; event-driven patient conditions (a rhythm seen in the waveform) pass ``technical=False``."""
        k = (condition, device)
        current = self._technical.get(k)
        if active and current is None:
            alarm_id = f"{self.scope}/{condition}/{device or '-'}/{int(t * 1000)}"
            self._technical[k] = alarm_id
            self._technical_since[k] = t
            self._technical_kind[k] = (severity, technical)
            event = AlarmEvent.RAISED
        elif not active and current is not None:
            alarm_id = current
            del self._technical[k]
            self._technical_since.pop(k, None)
            self._technical_kind.pop(k, None)
            event = AlarmEvent.CLEARED
        else:
            return []
        return [
            AlarmTransition(
                alarm_id=alarm_id,
                event=event,
                condition=condition,
                technical=technical,
                severity=severity,
                time=t,
                device=device,
                detail=detail,
            )
        ]

    def withdraw(self, device: str | None, t: float, why: str) -> list[AlarmTransition]:
        """Clear every alarm raised for ``device`` (None: every alarm of the patient), which left
        the config: nothing would ever clear them, and they would stay on upstream for good."""
        out: list[AlarmTransition] = []
        for key, rules in list(self._rules.items()):
            if device is None or key[1] == device:
                out += [tr for rule in rules if (tr := rule.withdraw(t, why)) is not None]
                if device is not None:
                    del self._rules[key]
        for condition, d in list(self._technical):
            if device is None or d == device:
                severity, technical = self._technical_kind.get((condition, d), (Severity.MEDIUM, True))
                out += self.technical(condition, False, t, device=d, severity=severity, detail=why, technical=technical)
        return out

    def raised_at(self, condition: str, device: str | None = None) -> float | None:
        """When this process raised technical ``condition`` (None: not raised, or raised before a restart)."""
        return self._technical_since.get((condition, device))

    def snapshot(self) -> dict[str, Any]:
        """The raised alarms, so that after a restart each still gets its one clear.  Pending
        (not yet raised) episodes are not kept: the downtime must not count toward a minimum duration."""
        return {
            "threshold": [
                {
                    "vital": r.vital.value,
                    "direction": r.direction,
                    "device": r.device,
                    "limit": r.limit.model_dump(),
                    "active_id": r._s.active_id,
                    "worst": r._s.worst,
                }
                for rules in self._rules.values()
                for r in rules
                if r.active
            ],
            "technical": [[c, d, alarm_id] for (c, d), alarm_id in self._technical.items()],
        }

    def restore(self, snap: Mapping[str, Any]) -> None:
        for item in snap.get("threshold", []):
            vital, direction = Vital(item["vital"]), str(item["direction"])
            device = None if item.get("device") is None else str(item["device"])
            rules = self._rules.setdefault(
                (vital, device), _rules_of(self.scope, vital, self._limits.get(vital), device)
            )
            rule = next((r for r in rules if r.direction == direction), None)
            if rule is None:  # the limit left the config meanwhile: clear by the rule that raised it
                rule = ThresholdRule(self.scope, vital, direction, Limit.model_validate(item["limit"]), device=device)
                rule.retired = True
                rules.append(rule)
            rule._s.active_id = str(item["active_id"])
            rule._s.worst = None if item.get("worst") is None else float(item["worst"])
        for condition, device, alarm_id in snap.get("technical", []):
            self._technical[(str(condition), None if device is None else str(device))] = str(alarm_id)

    def raised_for(self, device: str | None) -> list[str]:
        """The conditions raised through ``technical`` for ``device`` and not cleared yet."""
        return [c for c, d in self._technical if d == device]

    def active_conditions(self) -> list[str]:
        names = [r.condition for rules in self._rules.values() for r in rules if r.active]
        return names + [c for c, _ in self._technical]
