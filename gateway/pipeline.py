"""The processing pipeline: typed readings in, outbound records out.

It knows nothing of transports: the daemon feeds it readings from driver sessions and hands the
records it returns to the outbox.  Per patient it keeps alarm state and summary accumulators.
It also reports *evidence* — valid physiologic readings — for the billing ledger.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.alarms import AlarmEngine, AlarmTransition
from gateway.config.processing import EcgAlarmSection, EvidenceSection, ProcessingSection, VitalLimits
from gateway.ecg_alarms import ExtremeRateRules, no_valid_ecg_windows, rhythm_transitions, vt_settings
from gateway.evidence import EvidenceRecorder, Strip
from gateway.reading_checks import battery, unusable
from gateway.readings import INVALIDATING_FLAGS
from gateway.records import (
    AlarmEvent,
    AlarmRecord,
    BillingRecord,
    ClockQuality,
    DeviceEvent,
    DeviceFlag,
    DeviceState,
    DeviceStatusRecord,
    EvidenceRecord,
    Reading,
    SampleBlock,
    Severity,
    SummaryRecord,
    Vital,
    VitalReading,
    utc_from_unix,
)
from gateway.signal import spo2
from gateway.signal.ecg_channel import EcgChannel, EcgSettings
from gateway.signal.ecg_output import ValidityChange
from gateway.signal.ecg_rhythm import ASYSTOLE, VENTRICULAR_FIBRILLATION, RhythmSettings
from gateway.signal.standstill_memory import StandstillMemory
from gateway.signal.vt_detector import VENTRICULAR_TACHYCARDIA
from gateway.summaries import SummaryAggregator, VitalSummary

AnyRecord = SummaryRecord | AlarmRecord | DeviceStatusRecord | BillingRecord | EvidenceRecord

# Physiologically possible ranges; outside them a value is a decoding or sensor error, not a patient.
PLAUSIBLE: dict[Vital, tuple[float, float]] = {
    Vital.HEART_RATE: (15, 350),
    Vital.PULSE_RATE: (15, 350),
    Vital.SPO2: (40, 100),
    Vital.RR_INTERVAL: (170, 4000),
    Vital.SYSTOLIC_BP: (40, 300),
    Vital.DIASTOLIC_BP: (15, 200),
    Vital.MEAN_BP: (20, 250),
    Vital.BODY_TEMPERATURE: (25, 45),
    Vital.BODY_WEIGHT: (0.5, 500),
    Vital.GLUCOSE: (10, 1000),
    Vital.RESPIRATORY_RATE: (1, 120),
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """A valid physiologic reading, as the billing ledger needs to know of it."""

    patient: str
    device: str
    time: float
    clock: ClockQuality


@dataclass(slots=True)
class PipelineOutput:
    records: list[AnyRecord] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    accepted: list[VitalReading] = field(default_factory=list)
    # Readings set aside unprocessed, (device, field, why): their time or sample rate is not one
    # (``reading_checks``).
    rejected: list[tuple[str, str, str]] = field(default_factory=list)

    def extend(self, other: PipelineOutput) -> None:
        self.records.extend(other.records)
        self.evidence.extend(other.evidence)
        self.accepted.extend(other.accepted)
        self.rejected.extend(other.rejected)


@dataclass(frozen=True)
class PatientSetup:
    patient: str
    limits: Mapping[str, VitalLimits]
    devices: Mapping[str, str]  # device id -> driver name
    no_data_s: Mapping[str, float] = field(default_factory=dict)
    """Per device: seconds without valid data before a 'no_data' alarm (0 = never); absent = the default."""
    spot_devices: frozenset[str] = frozenset()
    """Devices that measure on demand (a cuff, a scale): each of their readings beyond a limit
    raises at once, with no minimum duration, since no further reading may come for hours."""


def is_valid(reading: VitalReading) -> bool:
    if reading.value is None or reading.flags & INVALIDATING_FLAGS or not math.isfinite(reading.value):
        return False
    bounds = PLAUSIBLE.get(reading.vital)
    return bounds is None or bounds[0] <= reading.value <= bounds[1]


# Condition of the technical alarm raised while an ECG channel gives no usable signal.
NO_VALID_ECG = "no_valid_ecg"
# Conditions an ECG channel raises and clears from its samples (per lead; see ``_ecg_condition``).
ECG_CONDITIONS = frozenset({NO_VALID_ECG, VENTRICULAR_FIBRILLATION, ASYSTOLE, VENTRICULAR_TACHYCARDIA})
DEVICE_DISCONNECTED = "device_disconnected"
# Technical alarms driven by status flags on a device's values.
FLAG_CONDITIONS = (("sensor_off", DeviceFlag.SENSOR_OFF), ("lead_off", DeviceFlag.LEAD_OFF))


def is_ecg(block: SampleBlock) -> bool:
    return block.channel.lower().startswith("ecg")


class _Patient:
    def __init__(
        self, setup: PatientSetup, period_s: float, ecg_alarms: EcgAlarmSection, evidence: EvidenceSection
    ) -> None:
        self.setup = setup
        self.alarms = AlarmEngine(setup.patient, setup.limits)
        self.extremes = ExtremeRateRules(setup.patient, ecg_alarms)
        self.evidence = EvidenceRecorder(evidence)
        self.summaries = SummaryAggregator(period_s)
        self.last_data: dict[str, float] = {}  # device -> time of its last reading
        self.clock = ClockQuality.SYNCED
        self.ecg: dict[tuple[str, str], EcgChannel] = {}  # (device, channel) -> processing state
        self.spo2: dict[str, spo2.Spo2State] = {}  # device -> SpO2 filter
        self.disconnected_since: dict[str, float] = {}
        # (device, ECG condition) -> the channels (leads) on which it is on: the alarm is the
        # device's, raised by its first lead and cleared by its last (``_ecg_condition``).
        self.ecg_on: dict[tuple[str, str], set[str]] = {}
        # (device, channel) -> the last process's memory of an asystole episode, for the channel
        # this one makes (``EcgChannel.resume``).
        self.standstill: dict[tuple[str, str], StandstillMemory] = {}


class Pipeline:
    def __init__(
        self,
        *,
        gateway_id: str,
        new_key: Callable[[], str],
        patients: Mapping[str, PatientSetup],
        summary_period_s: float = 60.0,
        no_data_s: float = 300.0,
        battery_low_pct: float = 15.0,
        processing: ProcessingSection | None = None,
        disconnect_alarm_s: float = 30.0,
        ecg_alarms: EcgAlarmSection | None = None,
        evidence: EvidenceSection | None = None,
    ) -> None:
        self.disconnect_alarm_s = disconnect_alarm_s
        proc = processing or ProcessingSection()
        self.ecg_alarms = ecg_alarms or EcgAlarmSection()
        self.evidence = evidence or EvidenceSection()
        self.ecg_settings = EcgSettings(
            hrv_window_s=proc.ecg_hrv_window_s,
            hrv_every_s=proc.ecg_hrv_every_s,
            rhythm=RhythmSettings(asystole_s=self.ecg_alarms.asystole_s),
            vt=vt_settings(self.ecg_alarms.ventricular_tachycardia),
            **no_valid_ecg_windows(self.ecg_alarms.no_valid_ecg),
        )
        self.spo2_params = spo2.Spo2Params(
            max_jump=proc.spo2.max_jump, median_s=proc.spo2.median_s, tau_s=proc.spo2.tau_s
        )
        self.gateway_id = gateway_id
        self.new_key = new_key
        self.summary_period_s = summary_period_s
        self.no_data_s = no_data_s
        self.battery_low_pct = battery_low_pct
        self._patients: dict[str, _Patient] = {}
        self.reconfigure(patients)

    def reconfigure(
        self, patients: Mapping[str, PatientSetup], now: float | None = None, clock: ClockQuality = ClockQuality.SYNCED
    ) -> PipelineOutput:
        """Apply a new set of patients; state of unchanged patients is kept (SIGHUP).  The alarms
        of a patient or device that left the config are cleared (at ``now``): nothing else ever
        would, and a stuck alarm upstream is worse than one that says why it ended."""
        out = PipelineOutput()
        kept = {}
        for pid, setup in patients.items():
            old = self._patients.get(pid)
            if old is not None:
                if old.setup.limits != setup.limits:
                    old.alarms.update_limits(setup.limits)
                for device in old.setup.devices.keys() - setup.devices.keys():
                    old.last_data.pop(device, None)
                    old.disconnected_since.pop(device, None)
                    if now is not None:
                        for tr in old.alarms.withdraw(device, now, "device removed from the config"):
                            out.records.append(self._alarm(old, tr, clock))
                old.setup = setup
                kept[pid] = old
            else:
                kept[pid] = _Patient(setup, self.summary_period_s, self.ecg_alarms, self.evidence)
        for pid in self._patients.keys() - patients.keys():
            if now is not None:
                gone = self._patients[pid]
                why = "patient removed from the config"
                for tr in gone.alarms.withdraw(None, now, why) + gone.extremes.withdraw(now):
                    out.records.append(self._alarm(gone, tr, clock))
        self._patients = kept
        return out

    # -- input ------------------------------------------------------------------------------

    def feed(self, patient: str, reading: Reading) -> PipelineOutput:
        p = self._patients.get(patient)
        out = PipelineOutput()
        if p is None:
            return out
        fault = unusable(reading)
        if fault is not None:
            out.rejected.append((reading.device_id, *fault))
            return out
        if isinstance(reading, VitalReading):
            self._vital(p, reading, out)
        elif isinstance(reading, SampleBlock):
            self._block(p, reading, out)
        else:
            self._event(p, reading, out)
        return out

    def _vital(self, p: _Patient, r: VitalReading, out: PipelineOutput) -> None:
        if r.vital is Vital.SPO2:
            state = p.spo2.get(r.device_id)
            if state is None:
                state = p.spo2[r.device_id] = spo2.Spo2State(self.spo2_params)
            for o in spo2.feed(state, r.time, r.value, r.flags):
                self._spo2(p, r, o, out)
            return
        self._apply(p, r, out)

    def _spo2(self, p: _Patient, r: VitalReading, o: spo2.Spo2Output, out: PipelineOutput) -> None:
        """One settled SpO2 reading: the smoothed value if accepted, the raw one marked invalid if not."""
        if o.verdict is spo2.Spo2Verdict.HELD:
            return
        accepted = o.verdict is spo2.Spo2Verdict.ACCEPTED and o.smoothed is not None
        value = o.smoothed if accepted else o.raw
        flags = r.flags if o.time == r.time else frozenset()
        settled = VitalReading(r.device_id, Vital.SPO2, value, r.unit, o.time, r.clock, flags, r.device_time)
        self._apply(p, settled, out, valid=accepted and is_valid(settled))

    def _apply(self, p: _Patient, r: VitalReading, out: PipelineOutput, valid: bool | None = None) -> None:
        p.clock = r.clock
        valid = is_valid(r) if valid is None else valid
        for s in p.summaries.add(r.vital, r.value, r.unit, r.time, r.device_id, valid):
            out.records.append(self._summary(p, s))
        self._flag_alarms(p, r, valid, out)
        if not valid:
            p.alarms.invalid(r.vital, r.device_id)
            p.extremes.invalid(r.vital)
            return
        assert r.value is not None
        self._seen(p, r.device_id, r.time, r.clock, out)
        out.accepted.append(r)
        spot = r.device_id in p.setup.spot_devices
        for tr in p.alarms.observe(r.vital, r.value, r.time, r.device_id, immediate=spot) + p.extremes.observe(
            r.vital, r.value, r.time, r.device_id
        ):
            out.records.append(self._alarm(p, tr, r.clock))

    def _flag_alarms(self, p: _Patient, r: VitalReading, valid: bool, out: PipelineOutput) -> None:
        """Sensor-off / lead-off as the device flags them on its values (not every device sends a
        separate event): raised by a flagged value, cleared by the device's next valid one.  A
        valid value measured before the raise clears nothing: an ECG channel releases its beats
        up to a quality window (4 s) late, and one measured before a lead came off would clear
        the ``sensor_off`` the device's event had just raised."""
        for condition, flag in FLAG_CONDITIONS:
            if flag in r.flags:
                active = True
            elif valid:
                since = p.alarms.raised_at(condition, r.device_id)
                if since is not None and r.time < since:
                    continue
                active = False
            else:
                continue
            for tr in p.alarms.technical(condition, active, r.time, device=r.device_id):
                out.records.append(self._alarm(p, tr, r.clock))

    def _block(self, p: _Patient, b: SampleBlock, out: PipelineOutput) -> None:
        p.clock = b.clock
        if not is_ecg(b):
            self._seen(p, b.device_id, b.first_sample_time + b.duration_s, b.clock, out, billing=False)
            self._strips(p, p.evidence.add_block(b), b.clock, out)
            return
        ch = p.ecg.get((b.device_id, b.channel))
        if ch is None:
            ch = p.ecg[(b.device_id, b.channel)] = EcgChannel(b.device_id, self.ecg_settings)
            # ECG alarms still raised from before a restart: the channel goes on with their
            # episodes (and starts "not valid"), so that its samples clear them, or keep them, as
            # if it had seen them start -- a new channel reports only changes.
            raised = [c for c in p.alarms.raised_for(b.device_id) if c in ECG_CONDITIONS]
            memory = p.standstill.pop((b.device_id, b.channel), None)
            ch.resume(raised, valid=NO_VALID_ECG not in raised, standstill=memory)
            for condition in raised:
                p.ecg_on.setdefault((b.device_id, condition), set()).add(b.channel)
        # Beats may wait for the channel's next decision point, except while a strip that marks them is cut.
        try:
            result = ch.feed(b, defer=not p.evidence.capturing(b.device_id))
        except Exception:
            # A fault in the channel must not leave it broken for every block after it (the daemon
            # logs the exception and goes on): the next block starts a new channel, which goes on
            # with the ECG alarms raised, as after a restart.
            del p.ecg[(b.device_id, b.channel)]
            raise
        if not result.dropped_blocks:
            # Samples count as data (no "no data" alarm) even while the ECG is not valid: the
            # device is there, its signal is the problem, and that has its own alarm.
            self._seen(p, b.device_id, b.first_sample_time + b.duration_s, b.clock, out, billing=False)
        if result.unreadable:
            # No beat-derived value is trustworthy now: a pending low/high-rate episode restarts.
            p.alarms.invalid(Vital.HEART_RATE, b.device_id)
            p.alarms.invalid(Vital.RR_INTERVAL, b.device_id)
            p.extremes.invalid(Vital.HEART_RATE)
        for change in result.changes:
            self._ecg_validity(p, b, change, out)
        for event in result.rhythm:
            if event.condition == VENTRICULAR_FIBRILLATION and event.active:
                # A rate episode pending before VF must not complete on VF "beats".
                p.alarms.invalid(Vital.HEART_RATE, b.device_id)
                p.extremes.invalid(Vital.HEART_RATE)
            if not self._ecg_condition(p, b, event.condition, event.active):
                continue
            for tr in rhythm_transitions(p.alarms, event, b.device_id, b.channel):
                if tr.event is AlarmEvent.RAISED:  # a strip for the raise (with its onset), none for the clear
                    p.evidence.arm(tr.alarm_id, tr.condition, b.device_id, tr.vital, tr.time, event.onset_time)
                out.records.append(self._alarm(p, tr, b.clock))
        for reading in result.readings:
            self._apply(p, reading, out)
        if not result.dropped_blocks:
            self._strips(p, p.evidence.add_block(b, result.beats), b.clock, out)

    def _strips(self, p: _Patient, strips: list[Strip], clock: ClockQuality, out: PipelineOutput) -> None:
        out.records.extend(
            EvidenceRecord(
                key=self.new_key(),
                gateway_id=self.gateway_id,
                patient=p.setup.patient,
                time=utc_from_unix(s.start_time),
                clock=clock,
                alarm_id=s.alarm_id,
                condition=s.condition,
                device=s.device,
                channel=s.channel,
                sample_rate_hz=s.fs,
                unit=s.unit,
                resolution=s.resolution,
                start_time=utc_from_unix(s.start_time),
                n_samples=s.n_samples,
                raise_index=s.raise_index,
                onset_index=s.onset_index,
                beats=s.beats,
                pace=s.pace,
                sample_format=s.sample_format,
                data=s.data,
            )
            for s in strips
        )

    def _ecg_validity(self, p: _Patient, b: SampleBlock, change: ValidityChange, out: PipelineOutput) -> None:
        if not self._ecg_condition(p, b, NO_VALID_ECG, not change.valid):
            return
        for tr in p.alarms.technical(
            NO_VALID_ECG,
            not change.valid,
            change.time,
            device=b.device_id,
            detail=f"{b.channel}: {change.detail}",
        ):
            if tr.event is AlarmEvent.RAISED:  # what the noise looked like, for the technician
                p.evidence.arm(tr.alarm_id, NO_VALID_ECG, b.device_id, None, tr.time, change.onset_time, technical=True)
            out.records.append(self._alarm(p, tr, b.clock))

    @staticmethod
    def _ecg_condition(p: _Patient, b: SampleBlock, condition: str, active: bool) -> bool:
        """Record that ``condition`` is on or off on ``b``'s channel; whether the device's alarm is
        to be raised (on any lead) or cleared (on none left).  A multi-lead front-end sees VF or a
        lost electrode on each lead apart: the first lead to recover must not clear the alarm
        while another still has it (nor could that lead raise it again: it reports only changes)."""
        on = p.ecg_on.setdefault((b.device_id, condition), set())
        if active:
            on.add(b.channel)
            return True  # raising is idempotent: a second lead adds nothing
        on.discard(b.channel)
        return not on

    def _seen(
        self, p: _Patient, device: str, t: float, clock: ClockQuality, out: PipelineOutput, *, billing: bool = True
    ) -> None:
        """The device sent data: no "no data" alarm.  ``billing``: and it is evidence of a day of
        physiologic data.  Waveform samples are not: a strap or probe left powered on the nightstand
        sends them too (flat, lead off, noise).  The valid readings made from them (heart rate from
        the ECG's beats, SpO2 beside the pleth) are."""
        p.last_data[device] = max(t, p.last_data.get(device, t))  # a late reading is no newer data
        if billing:
            out.evidence.append(Evidence(p.setup.patient, device, t, clock))
        for tr in p.alarms.technical("no_data", False, t, device=device):
            out.records.append(self._alarm(p, tr, clock))

    def _event(self, p: _Patient, e: DeviceEvent, out: PipelineOutput) -> None:
        pct = battery(e)
        out.records.append(
            DeviceStatusRecord(
                key=self.new_key(),
                gateway_id=self.gateway_id,
                patient=p.setup.patient,
                time=utc_from_unix(e.time),
                clock=e.clock,
                device=e.device_id,
                driver=p.setup.devices.get(e.device_id, ""),
                state=e.state,
                detail=e.detail,
                battery_pct=pct,
            )
        )
        transitions: list[AlarmTransition] = []
        if e.state in (DeviceState.SENSOR_OFF, DeviceState.SENSOR_ON):
            transitions = p.alarms.technical(
                "sensor_off", e.state is DeviceState.SENSOR_OFF, e.time, device=e.device_id, detail=e.detail
            )
        elif e.state in (DeviceState.BATTERY_LOW, DeviceState.BATTERY_OK):
            transitions = p.alarms.technical(
                "battery_low", e.state is DeviceState.BATTERY_LOW, e.time, device=e.device_id, detail=e.detail
            )
        elif pct is not None:
            transitions = p.alarms.technical("battery_low", pct < self.battery_low_pct, e.time, device=e.device_id)
        if e.state is DeviceState.CONNECTED:
            # A reconnected device starts a fresh silence timer rather than inheriting the old one.
            p.last_data.setdefault(e.device_id, e.time)
            p.disconnected_since.pop(e.device_id, None)
            transitions += p.alarms.technical(DEVICE_DISCONNECTED, False, e.time, device=e.device_id)
        elif e.state is DeviceState.DISCONNECTED:
            # Raised by ``tick`` only if the link stays down: BLE links drop and come back within
            # seconds all the time, and each blip must not become an alarm.
            p.disconnected_since.setdefault(e.device_id, e.time)
        out.records.extend(self._alarm(p, tr, e.clock) for tr in transitions)

    def technical(
        self,
        patient: str,
        condition: str,
        active: bool,
        t: float,
        *,
        device: str | None = None,
        severity: Severity = Severity.MEDIUM,
        detail: str = "",
        clock: ClockQuality = ClockQuality.SYNCED,
    ) -> PipelineOutput:
        """Raise/clear a technical alarm from outside the data path (supervisor, outbox)."""
        out = PipelineOutput()
        p = self._patients.get(patient)
        if p is not None:
            for tr in p.alarms.technical(condition, active, t, device=device, severity=severity, detail=detail):
                out.records.append(self._alarm(p, tr, clock))
        return out

    def active_alarm_count(self) -> int:
        return sum(
            len(p.alarms.active_conditions()) + len(p.extremes.active_conditions()) for p in self._patients.values()
        )

    # -- time -------------------------------------------------------------------------------

    def tick(self, now: float, clock: ClockQuality = ClockQuality.SYNCED) -> PipelineOutput:
        """Close summary periods that have ended and check for silent devices."""
        out = PipelineOutput()
        for p in self._patients.values():
            # Summaries close on data time; grace of one period lets late readings land first.
            for s in p.summaries.flush(now - self.summary_period_s):
                out.records.append(self._summary(p, s))
            for device in p.setup.devices:
                # A device that has sent nothing since start (or since it was added) is silent
                # from then on: one that never comes back after a restart is alarmed too.
                if p.setup.no_data_s.get(device, self.no_data_s) > 0:
                    p.last_data.setdefault(device, now)
            for device, last in p.last_data.items():
                limit = p.setup.no_data_s.get(device, self.no_data_s)
                if limit > 0 and now - last >= limit:
                    for tr in p.alarms.technical(
                        "no_data",
                        True,
                        now,
                        device=device,
                        detail=f"no valid data for {int(now - last)} s",
                    ):
                        out.records.append(self._alarm(p, tr, clock))
            for device, since in p.disconnected_since.items():
                if now - since >= self.disconnect_alarm_s:
                    for tr in p.alarms.technical(
                        DEVICE_DISCONNECTED,
                        True,
                        now,
                        device=device,
                        detail=f"disconnected for {int(now - since)} s",
                    ):
                        out.records.append(self._alarm(p, tr, clock))
        return out

    def patients(self) -> list[str]:
        return list(self._patients)

    def snapshot(self, patient: str) -> bytes | None:
        """What must survive a crash of one patient's processing: raised alarms (each still gets its
        one clear) and open summary periods.  Signal-filter state is relearnt in seconds and not kept,
        but for what an asystole episode on needs to be told from its P and T waves (``StandstillMemory``)."""
        p = self._patients.get(patient)
        if p is None:
            return None
        state = {
            "v": 1,
            "alarms": p.alarms.snapshot(),
            "summaries": p.summaries.snapshot(),
            "extremes": p.extremes.snapshot(),
            # Only while an asystole episode is on, and fixed at its raise (no extra writes).
            "standstill": [
                [device, channel, ch.standstill.to_json()]
                for (device, channel), ch in p.ecg.items()
                if ch.standstill is not None
            ],
        }
        return json.dumps(state, separators=(",", ":")).encode()

    def restore(self, patient: str, blob: bytes) -> bool:
        """Apply a ``snapshot``; False (and nothing applied) when it cannot be read."""
        p = self._patients.get(patient)
        if p is None:
            return False
        try:
            state = json.loads(blob)
            if not isinstance(state, dict) or state.get("v") != 1:
                return False
            alarms = AlarmEngine(p.setup.patient, p.setup.limits)
            alarms.restore(state["alarms"])
            summaries = SummaryAggregator(self.summary_period_s)
            summaries.restore(state["summaries"])
            extremes = ExtremeRateRules(p.setup.patient, self.ecg_alarms)
            extremes.restore(state.get("extremes", []))
        except (ValueError, KeyError, TypeError):
            return False
        p.alarms, p.summaries, p.extremes = alarms, summaries, extremes
        p.standstill = {}
        for item in state.get("standstill", []):
            # A memory that cannot be read only costs the asystole its reference: the rest stands.
            try:
                device, channel, doc = item
                p.standstill[(str(device), str(channel))] = StandstillMemory.from_json(doc)
            except (ValueError, TypeError):
                continue
        return True

    def close_device(self, patient: str, device: str) -> PipelineOutput:
        """Emit now the summaries that hold values of ``device`` (its driver is about to checkpoint)."""
        out = PipelineOutput()
        p = self._patients.get(patient)
        if p is not None:
            out.records.extend(self._summary(p, s) for s in p.summaries.close_device(device))
        return out

    def flush(self, now: float) -> PipelineOutput:
        """At shutdown: emit the open summary periods as partial ones."""
        out = PipelineOutput()
        for p in self._patients.values():
            for device, state in p.spo2.items():
                # Jumps still waiting for confirmation will not get it: settle them as rejected.
                for o in spo2.settle(state):
                    self._spo2(p, _placeholder_spo2(device, o), o, out)
            for s in p.summaries.flush(now, partial=True):
                out.records.append(self._summary(p, s))
        return out

    # -- record building --------------------------------------------------------------------

    def _summary(self, p: _Patient, s: VitalSummary) -> SummaryRecord:
        return SummaryRecord(
            key=self.new_key(),
            gateway_id=self.gateway_id,
            patient=p.setup.patient,
            time=utc_from_unix(s.period_end),
            clock=p.clock,
            vital=s.vital,
            unit=s.unit,
            period_start=utc_from_unix(s.period_start),
            period_end=utc_from_unix(s.period_end),
            count=s.count,
            rejected=s.rejected,
            min=s.min,
            mean=s.mean,
            max=s.max,
            quality=s.quality,
            devices=list(s.devices),
        )

    def _alarm(self, p: _Patient, tr: AlarmTransition, clock: ClockQuality) -> AlarmRecord:
        if tr.event is AlarmEvent.RAISED and not tr.technical and tr.device is not None:
            p.evidence.arm(tr.alarm_id, tr.condition, tr.device, tr.vital, tr.time)
        return AlarmRecord(
            key=self.new_key(),
            gateway_id=self.gateway_id,
            patient=p.setup.patient,
            time=utc_from_unix(tr.time),
            clock=clock,
            alarm_id=tr.alarm_id,
            event=tr.event,
            condition=tr.condition,
            technical=tr.technical,
            severity=tr.severity,
            vital=tr.vital,
            value=tr.value,
            threshold=tr.threshold,
            device=tr.device,
            detail=tr.detail,
        )


def _placeholder_spo2(device: str, o: spo2.Spo2Output) -> VitalReading:
    return VitalReading(device, Vital.SPO2, o.raw, "%", o.time)
