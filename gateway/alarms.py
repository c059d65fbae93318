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


class ThresholdRule:
    """One direction ('low' or 'high') of one vital's limit, as a small state machine."""

    def __init__(self, scope: str, vital: Vital, direction: str, limit: Limit, condition: str | None = None) -> None:
        self.scope = scope
        self.vital = vital
        self.direction = direction
        self.limit = limit
        self.condition = condition or f"{vital.value}_{direction}"
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

    def observe(self, value: float, t: float, device: str | None) -> AlarmTransition | None:
        s = self._s
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
        if s.pending_since is None:
            s.pending_since = t
        if t - s.pending_since >= self.limit.min_duration_s:
            s.active_id = f"{self.scope}/{self.condition}/{int(t * 1000)}"
            s.worst = value
            return self._transition(s.active_id, AlarmEvent.RAISED, t, value, device)
        return None

    def interrupt(self) -> None:
        """The signal became invalid: a pending (not yet raised) episode must start again."""
        self._s.pending_since = None

    def _worse(self, a: float, b: float) -> float:
        return min(a, b) if self.direction == "low" else max(a, b)

    def _transition(
        self, alarm_id: str, event: AlarmEvent, t: float, value: float, device: str | None, detail: str = ""
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


class AlarmEngine:
    """All alarm state of one patient: threshold rules per vital and technical conditions."""

    def __init__(self, scope: str, limits: Mapping[str, VitalLimits]) -> None:
        self.scope = scope
        self._rules: dict[Vital, list[ThresholdRule]] = {}
        for name, lim in limits.items():
            vital = Vital(name)
            rules = []
            if lim.low is not None:
                rules.append(ThresholdRule(scope, vital, "low", lim.low))
            if lim.high is not None:
                rules.append(ThresholdRule(scope, vital, "high", lim.high))
            self._rules[vital] = rules
        self._technical: dict[tuple[str, str | None], str] = {}
        self._technical_since: dict[tuple[str, str | None], float] = {}  # raise times (this process's)

    def update_limits(self, limits: Mapping[str, VitalLimits]) -> None:
        """New limits (config reload): alarms already raised stay raised under the same id and
        clear by the new rule, so each still gets exactly one clear; a rule that no longer exists
        keeps its active alarm until the value recovers by the old rule."""
        old = {(r.vital, r.direction): r for rules in self._rules.values() for r in rules}
        self._rules = {}
        for name, lim in limits.items():
            vital = Vital(name)
            rules = []
            for direction, limit in (("low", lim.low), ("high", lim.high)):
                if limit is None:
                    continue
                rule = ThresholdRule(self.scope, vital, direction, limit)
                prev = old.pop((vital, direction), None)
                if prev is not None and prev.active:
                    rule._s.active_id = prev._s.active_id
                rules.append(rule)
            self._rules[vital] = rules
        for (vital, _), prev in old.items():
            if prev.active:
                prev.retired = True
                self._rules.setdefault(vital, []).append(prev)

    def observe(self, vital: Vital, value: float, t: float, device: str | None = None) -> list[AlarmTransition]:
        out = []
        for rule in self._rules.get(vital, ()):
            tr = rule.observe(value, t, device)
            if tr is not None:
                out.append(tr)
        return out

    def invalid(self, vital: Vital) -> None:
        """A reading of ``vital`` was rejected: do not let a gap count toward a minimum duration."""
        for rule in self._rules.get(vital, ()):
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
            event = AlarmEvent.RAISED
        elif not active and current is not None:
            alarm_id = current
            del self._technical[k]
            self._technical_since.pop(k, None)
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
            rule = next((r for r in self._rules.get(vital, ()) if r.direction == direction), None)
            if rule is None:  # the limit left the config meanwhile: clear by the rule that raised it
                rule = ThresholdRule(self.scope, vital, direction, Limit.model_validate(item["limit"]))
                rule.retired = True
                self._rules.setdefault(vital, []).append(rule)
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
