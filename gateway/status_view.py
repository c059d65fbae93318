"""Human-readable views: the demo's live screen and the ``outbox`` command's table."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gateway.readings import SampleBlock
from gateway.records import (
    AlarmEvent,
    AlarmRecord,
    BillingRecord,
    DeviceStatusRecord,
    EvidenceRecord,
    Reading,
    RecordKind,
    SummaryRecord,
    Vital,
)

if TYPE_CHECKING:
    from gateway.daemon import Daemon
    from gateway.outbox import OutboxStats
    from gateway.pipeline import PipelineOutput

_SHOWN = (
    (Vital.SPO2, "SpO2", "%"),
    (Vital.PULSE_RATE, "PR", "/min"),
    (Vital.HEART_RATE, "HR(ECG)", "/min"),
    (Vital.BODY_TEMPERATURE, "Temp", "°C"),
    (Vital.SYSTOLIC_BP, "SBP", ""),
    (Vital.DIASTOLIC_BP, "DBP", "mmHg"),
)


# A streamed vital last read this long before the patient's latest reading is shown with its age:
# the line is dated by the latest reading, and a heart rate held back through VF or an asystole
# must not read as the rate of that moment.  Spot checks (temperature, blood pressure) are read
# minutes apart and shown as they are.
STALE_S = 15.0
_STREAMED = frozenset({Vital.SPO2, Vital.PULSE_RATE, Vital.HEART_RATE})


def _shown(vital: Vital, label: str, unit: str, value: float, read_at: float, latest: float | None) -> str:
    text = f"{label} {value:.0f}{unit}"
    if vital in _STREAMED and latest is not None and latest - read_at > STALE_S:
        text += f" ({_age(latest - read_at)} old)"
    return text


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_outbox(stats: OutboxStats, db: Path) -> str:
    lines = [f"outbox {db} ({stats.db_bytes / 1e6:.1f} MB)"]
    lines.append(f"  {'class':<9}{'pending':>9}{'leased':>8}{'oldest':>10}{'dropped':>9}")
    for kind in RecordKind:
        c = stats.classes.get(kind)
        if c is None:
            continue
        lines.append(f"  {kind.value:<9}{c.pending:>9}{c.leased:>8}{_age(c.oldest_pending_age_s):>10}{c.dropped:>9}")
    last = (
        datetime.fromtimestamp(stats.last_delivery, tz=UTC).isoformat(timespec="seconds")
        if stats.last_delivery
        else "never"
    )
    lines.append(f"  accepted {stats.accepted}, delivered {stats.delivered}, refused {stats.refused}")
    lines.append(f"  last delivery: {last}")
    return "\n".join(lines)


class LiveView:
    """What the demo prints: alarms, billing and device events as they happen, vitals and delivery
    figures every couple of seconds."""

    def __init__(self, out: TextIO | None = None, every_s: float = 2.0) -> None:
        self.out = out or sys.stdout
        self.color = self.out.isatty()
        self.every_s = every_s
        # Per patient and vital: the last value accepted and its time.
        self.latest: dict[str, dict[Vital, tuple[float, float]]] = defaultdict(dict)
        self.summaries = 0
        self.alarms = 0
        self.billing = 0
        self.strips = 0
        self._last_print = 0.0
        self.record_time: dict[str, float] = {}
        # Per patient, the alarms raised and not yet cleared: alarm id -> what the line says of it.
        self.active: dict[str, dict[str, str]] = defaultdict(dict)

    def _c(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _say(self, patient: str, t: datetime, text: str) -> None:
        print(f"{t:%Y-%m-%d %H:%M:%S}  {patient:<8} {text}", file=self.out, flush=True)

    def observe(self, patient: str, reading: Reading | None, output: PipelineOutput) -> None:
        if isinstance(reading, SampleBlock):
            # The samples date the line too: through a VF alarm no heart rate is released, and an
            # ECG-only patient's line went on showing the last rate before it, dated then, as if
            # nothing had come since (the demo's vfdb 424: "HR(ECG) 125/min" for minutes of VF).
            end = reading.first_sample_time + reading.duration_s
            self.record_time[patient] = max(end, self.record_time.get(patient, end))
        for r in output.accepted:
            if r.value is not None:
                self.latest[patient][r.vital] = (r.value, r.time)
            self.record_time[patient] = max(r.time, self.record_time.get(patient, r.time))
        for rec in output.records:
            self.record(rec)

    def record(self, rec: object) -> None:
        if isinstance(rec, AlarmRecord):
            self.alarms += 1
            what = rec.condition.replace("_", " ")
            value = ""
            if rec.value is not None and rec.threshold is not None:
                value = f" value {rec.value:.4g} (limit {rec.threshold:g})"
            kind = "TECH ALARM" if rec.technical else "ALARM"
            if rec.event is AlarmEvent.RAISED:
                self.active[rec.patient][rec.alarm_id] = what
            else:
                self.active[rec.patient].pop(rec.alarm_id, None)
            colour = "1;31" if rec.event is AlarmEvent.RAISED else "32"
            self._say(
                rec.patient,
                rec.time,
                self._c(f"{kind} {rec.event.value.upper()}: {what}{value} [{rec.severity.value}]", colour)
                + (f" {rec.detail}" if rec.detail else ""),
            )
        elif isinstance(rec, BillingRecord):
            self.billing += 1
            self._say(
                rec.patient,
                rec.time,
                self._c(
                    f"BILLING {rec.code} {rec.status.value} v{rec.version}: "
                    f"period {rec.period_start}..{rec.period_end}, {rec.qualifying_days} day(s) of data",
                    "1;35",
                ),
            )
        elif isinstance(rec, EvidenceRecord):
            self.strips += 1
            self._say(
                rec.patient,
                rec.time,
                self._c(
                    f"EVIDENCE {rec.condition.replace('_', ' ')}: {rec.n_samples / rec.sample_rate_hz:.1f} s of "
                    f"{rec.channel} at {rec.sample_rate_hz:g} Hz, {len(rec.beats)} beats marked, "
                    f"{len(rec.data):,} bytes of samples (alarm {rec.alarm_id})",
                    "33",
                ),
            )
        elif isinstance(rec, DeviceStatusRecord):
            self._say(rec.patient, rec.time, self._c(f"device {rec.device} {rec.state.value} {rec.detail}", "36"))
        elif isinstance(rec, SummaryRecord):
            self.summaries += 1

    def tick(self, daemon: Daemon) -> None:
        now = time.monotonic()
        if now - self._last_print < self.every_s:
            return
        self._last_print = now
        for patient, vitals in sorted(self.latest.items()):
            t = self.record_time.get(patient)
            parts = [_shown(v, label, unit, *vitals[v], t) for v, label, unit in _SHOWN if v in vitals]
            if not parts:
                continue  # only vitals this screen does not show (RR intervals, HRV) so far
            when = datetime.fromtimestamp(t, tz=UTC) if t else datetime.now(UTC)
            on = sorted(set(self.active[patient].values()))
            # The vitals beside the alarms still on: a rate held back through VF reads with them.
            alarms = self._c(f"  | alarms on: {', '.join(on)}", "1;31") if on else ""
            self._say(patient, when, "  ".join(parts) + alarms)
        snap = daemon.snapshot()
        ob = snap["outbox"]
        up = snap["uplink"]
        sessions = snap["sessions"]
        running = sum(1 for s in sessions if s.state == "running")
        pending = "  ".join(f"{k.value} {c.pending}" for k, c in ob.classes.items()) if ob else "-"
        broker = "connected" if up is not None and up.connected else "offline"
        line = (
            f"[gateway] devices {running}/{len(sessions)} up | broker {broker} | records accepted "
            f"{ob.accepted if ob else 0}, delivered {up.delivered if up else 0} | outbox pending: {pending} | "
            f"summaries {self.summaries}, alarms {self.alarms}, evidence {self.strips}, billing {self.billing}"
        )
        print(self._c(line, "2") if self.color else line, file=self.out, flush=True)
