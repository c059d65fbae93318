"""One ECG channel end to end: sample blocks in, beat-derived vitals and validity changes out.

Glues the R-peak detector, the quality index, heart rate and HRV together with the rules that
make their output safe to alarm on:

* Beat-derived readings (heart rate, RR interval) are held until the quality window they fall in
  has been judged, and dropped if it was not ``GOOD``: beats found in noise never reach an alarm.
  That delays them by at most one quality window (4 s), well inside the alarms' minimum duration.
* A window's verdict is the quality index's, with what the channel knows besides (peaks the
  detector set aside, early beats, complexes alike one another, the rhythm on): ``window_verdict``.
* Readings stop at the first bad window and come back after ``recover_windows`` good ones in a
  row (the first good window after noise often holds its tail).  The "no valid ECG" technical
  alarm (``changes``) is decided apart, with its own delay and hysteresis (``no_valid_ecg``):
  intermittent noise gives one alarm for the stretch, not one per burst, and a single noisy
  window gives none; the beats in it are held back all the same.  Readings held back for 3
  windows with no VT or asystole alarm to say why raise it too (``unreadable``): a rhythm whose
  windows alternate good and bad would otherwise leave the monitor blank.
* A good window with no beat for half as long again as the recent RR (2-3 s) reports the rate
  that the silence implies (``heart_rate.silence_rate``), so a real pause or asystole on a valid
  signal still drives the low-rate alarm, while a lead-off flat line (invalid) does not.
* A gap in the samples, a rate change, a sample count that starts again (a strap's new link) or
  a block with a non-finite or impossible sample (beyond ``ecg_filters.MAX_ABS_MV``, 10 V: an
  unusable block, counted in ``dropped``) restart the filters: samples are never glued across a
  gap.  The R-peak detector keeps its learnt levels (at the same rate), the native
  rhythm its QRS template, and a rhythm episode on goes on across the gap, as do the episodes
  whose alarms were raised before the daemon restarted (``resume``): the samples after the break
  end them or keep them.  Across a gap of lost frames up to ``bridge_gap_s`` the rhythm
  monitor goes on with its decisions in progress (``_bridge``).
* Samples the device flags lead off or saturated (``SampleBlock.flags``) are no signal, whatever
  they look like (with its lead off a front-end may give low, quiet noise: a standstill to the
  rhythm rules): they are set aside as at a gap, never raise asystole, VF or VT, give no rate and
  teach the detectors nothing; readings come back after ``recover_windows`` good windows, and an
  episode on goes on, as across a gap, for the samples after them to end or keep.  They are
  samples all the same (not dropped: no "no data").  One technical alarm per cause: a lead
  off is the driver's ``sensor_off`` event, and raises no "no valid ECG" beside it; saturation,
  which has no event, counts as saturated windows (``_flagged``).
* Lethal rhythms (``ecg_rhythm``): during ventricular fibrillation/flutter no heart rate is reported
  (the "beats" found in VF are not a rate), and its low-kurtosis windows are not called noise; an
  episode's start also ends a "no valid ECG" spell it caused.  VT's wide complexes read as noise
  too: its onset ends a spell begun by noisy windows, and none starts while it lasts (its rate is
  still not released from a window that is not good).  Asystole is reported as a rhythm too,
  and while it lasts a window noisy for its low kurtosis alone (no QRS left to lift it) starts no
  spell either; a jump in amplitude still does, and a spell already on stays on (noise that hid
  the QRS looks the same).
* Pacing pulses the device marks on a block (``SampleBlock.pace``) are held out of the samples
  before any detector sees them (``pace_blanking``): a pacemaker's spikes are no heartbeat, and
  counted as beats they hide a standstill or VF behind the pacing rate.
* Samples are processed when they reach the next decision point (a quality-window or VF-step end,
  at most ~1 s apart), not block by block: every decision comes out in the block it would come
  out in anyway, for about half the CPU of running the filters and the detector on every
  100 ms block.  Beats come out up to ~1 s later, except while they matter at once (see ``feed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from gateway.readings import VITAL_UNITS, ClockQuality, DeviceFlag, SampleBlock, Vital, VitalReading
from gateway.signal import ecg_quality, heart_rate, hrv, pace_blanking, rpeak_detector, window_verdict
from gateway.signal.ecg_filters import (
    MAX_RATE_HZ,
    MAX_SQUARES_MV2,
    MIN_RATE_HZ,
    join_samples,
    plausible,
    to_millivolts,
)
from gateway.signal.ecg_output import EcgOutput, RhythmEvent, ValidityChange
from gateway.signal.ecg_quality import EcgQuality, QualityWindow
from gateway.signal.ecg_rhythm import (
    ASYSTOLE,
    NO_SIGNAL,
    VENTRICULAR_FIBRILLATION,
    RhythmChange,
    RhythmMonitor,
    RhythmSettings,
)
from gateway.signal.native_rhythm import NativeRhythm
from gateway.signal.no_valid_ecg import UNREADABLE, NoValidEcgAlarm, Verdict
from gateway.signal.rpeak_detector import RPeakDetector
from gateway.signal.standstill_memory import StandstillMemory
from gateway.signal.vt_detector import (
    VENTRICULAR_TACHYCARDIA,
    Shape,
    VtChange,
    VtDetector,
    VtSettings,
    correlation,
    measure,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]


_sum = np.add.reduce
_FLOAT64 = np.dtype(np.float64)
# Device flags under which a block's samples are no signal (``_flagged``).
_NO_SIGNAL_FLAGS = frozenset({DeviceFlag.LEAD_OFF, DeviceFlag.SATURATED})
_QUALITY_WINDOW_S = ecg_quality.QualityParams().window_s  # the channel's quality state uses the defaults


@dataclass(frozen=True, slots=True)
class EcgSettings:
    hrv_window_s: float = 300.0
    hrv_every_s: float = 60.0
    recover_windows: int = 2  # good windows in a row after a bad one before readings are released again
    alarm_bad_windows: int = 2  # "no valid ECG": noisy windows among the last ``alarm_of_windows`` that raise it
    alarm_of_windows: int = 3
    alarm_clear_windows: int = 4  # good windows in a row that clear it (``no_valid_ecg``)
    alarm_held_windows: int = 3  # windows with readings held back, unexplained, that raise it (0: never)
    max_noise_ratio: float = 0.4  # mean noise peak in a window over the QRS level beyond which it is noisy
    max_slope_floor: float = 0.2  # beyond it, a window with an early beat is noisy (module docstring)
    short_rr_ratio: float = 0.6  # an RR under this share of the recent released ones is early
    # A window noisy for its low kurtosis alone is readable when the complexes at its beats are
    # alike (``_alike_share``): at least ``alike_beats`` of them whole in the window, each
    # correlating at ``alike_corr`` or more with the one before or after it.
    alike_beats: int = 3
    alike_corr: float = 0.9
    pace_blank_ms: float = pace_blanking.DEFAULT_BLANK_MS  # held from each pacing pulse the device marks
    # A gap of lost samples up to this long keeps the rhythm decisions made before it (module docstring).
    bridge_gap_s: float = 2.0
    rhythm: RhythmSettings = field(default_factory=RhythmSettings)
    vt: VtSettings = field(default_factory=VtSettings)


# A reading held until its quality window is judged, with the sample index it belongs to (to find
# that window): a plain tuple, two of them per beat.
_Pending = tuple[int, VitalReading]

_RR = Vital.RR_INTERVAL
_HR = Vital.HEART_RATE
_RR_UNIT = VITAL_UNITS[_RR]
_HR_UNIT = VITAL_UNITS[_HR]


class EcgChannel:
    """Processing state for one ECG channel of one device."""

    # Made at the first block (``_start``), when the sample rate is known.
    detector: RPeakDetector
    rhythm: RhythmMonitor
    native: NativeRhythm
    # Samples flagged saturated counted toward "no valid ECG", and the time of the first (``_flagged``).
    _saturated: tuple[int, float] = (0, 0.0)

    def __init__(self, device_id: str, settings: EcgSettings | None = None) -> None:
        self.device_id = device_id
        self.settings = settings or EcgSettings()
        self.fs: float | None = None
        s = self.settings
        self.alarm = NoValidEcgAlarm(
            s.alarm_bad_windows, s.alarm_of_windows, s.alarm_clear_windows, held_windows=s.alarm_held_windows
        )
        self.readable = True  # beat readings are released from good windows
        self.good_streak = 0
        self.dropped = 0
        self._next_index: int | None = None
        self._anchor: tuple[int, float] = (0, 0.0)  # (sample index, its Unix time)
        self._pending: list[_Pending] = []
        # The first beat since the last QRS that the rhythm monitor did not count as one: the
        # readings from it on wait for the next QRS (see ``_judge``).
        self._uncounted_from: int | None = None
        self._uncounted_wait = 0  # samples (set with the rate)
        self._held: list[_Pending] = []  # their readings, judged good, waiting
        self._ready: list[_Pending] = []  # ...and released at the next window's end (a QRS came)
        # The detector's count and sum of the peaks it set aside, at the last window's end.
        self._noise_seen: tuple[int, float] = (0, 0.0)
        self._released_rr: tuple[float, ...] = ()  # ms, the last RR intervals released, newest last
        self._last_beat_time: float | None = None
        self._last_hrv: float | None = None
        self._hrv = hrv.HrvState(window_s=self.settings.hrv_window_s)
        self._clock = ClockQuality.SYNCED
        # Accepted samples not processed yet (see ``feed``): the bytes of the caller's own arrays,
        # or arrays of the channel's own.
        self._queue: list[FloatArray | bytes] = []
        self._due = 0  # sample index whose arrival makes processing due
        self.vt: VtDetector | None = None
        self._resumed: frozenset[str] = frozenset()  # episodes raised before a restart (``resume``)
        self._resumed_standstill: StandstillMemory | None = None
        self.standstill: StandstillMemory | None = None  # while an asystole episode is on
        self._noisy_spell = False  # the "no valid ECG" spell on is over a live signal (noisy or unreadable, not flat)
        self._hold_until = 0  # index to which a pacing pulse's hold lasts (``pace_blanking``)
        self._pace_width = 0
        self.pacing_pulses = 0  # marked by the device, held out

    def resume(
        self, conditions: Iterable[str], *, valid: bool = True, standstill: StandstillMemory | None = None
    ) -> None:
        """Rhythm episodes whose alarms were raised before the daemon restarted and are still
        raised: the channel goes on with them (see ``RhythmMonitor.resume``), so that the samples
        that come in end them, and their alarms get their clear, or keep them on.  ``valid=False``:
        "no valid ECG" was raised, so the channel starts not valid (nor readable) and reports its recovery.
        ``standstill``: the last process's memory of an asystole episode (``StandstillMemory``)."""
        self._resumed = frozenset(conditions) & {VENTRICULAR_FIBRILLATION, ASYSTOLE, VENTRICULAR_TACHYCARDIA}
        self._resumed_standstill = standstill if ASYSTOLE in self._resumed else None
        self.readable = valid
        self.alarm.restart(raised=not valid)

    @property
    def valid(self) -> bool:
        """No "no valid ECG" alarm raised (see ``changes``)."""
        return not self.alarm.raised

    def _start(self, fs: float, first_index: int, *, bridge: bool = False) -> None:
        """Start afresh at ``first_index`` (the first block, a gap, a new rate).  ``bridge``: a
        short gap of lost samples at the same rate, which the rhythm monitor and the native
        rhythm's ring go on across (``_bridge``)."""
        previous = self.rhythm if self.fs is not None else None  # set with ``fs``, at the first start
        resumed, self._resumed = self._resumed, frozenset()
        memory, self._resumed_standstill = self._resumed_standstill, None
        same_rate = previous is not None and previous.fs == fs
        self.fs = fs
        if same_rate:
            # Filters and candidates restart; the learnt QRS and noise levels are kept, so that a
            # standstill's P and T waves stay below threshold after a gap as they were before it.
            rpeak_detector.restart(self.detector.state, first_index)
        else:
            self.detector = RPeakDetector(fs, first_index=first_index)
        qrs_reference: Iterable[float] = previous.qrs_reference if previous is not None and same_rate else ()
        if memory is not None and memory.fs == fs:
            rpeak_detector.adopt(self.detector.state, memory.levels)
            qrs_reference = memory.qrs_reference
            self.standstill = memory  # kept for a further restart while the episode lasts
        self.quality = ecg_quality.new_quality_state(fs, first_index=first_index)
        self.hr = heart_rate.HeartRateState(fs=fs)
        self._hold_until = 0  # a hold does not go on across a gap
        self._pace_width = pace_blanking.blank_width(fs, self.settings.pace_blank_ms)
        if not (bridge and same_rate):
            native = NativeRhythm(fs, first_index=first_index)
            if same_rate:  # the patient's QRS is the same after a gap
                native.template, native.template_rr = self.native.template, self.native.template_rr
            self.native = native
            self.rhythm = RhythmMonitor(fs, self.settings.rhythm, first_index, self.native.through_artefact)
            # Episodes on go on across a gap (or a restart): the samples after it end them or keep them.
            self.rhythm.resume(
                vf=VENTRICULAR_FIBRILLATION in resumed or (previous is not None and previous.vf_active),
                asystole=ASYSTOLE in resumed or (previous is not None and previous.asystole),
                qrs_reference=qrs_reference,
            )
        # The VT reference (the patient's own beats) and an episode on are kept across a gap at
        # the same rate: the beats after it end the episode, or go on with it.
        vt_on = VENTRICULAR_TACHYCARDIA in resumed or (self.vt is not None and self.vt.active)
        if self.settings.vt.enabled and (self.vt is None or self.vt.fs != fs):
            self.vt = VtDetector(fs, self.settings.vt)
        if self.vt is not None:
            self.vt.restart(first_index, episode_on=vt_on)
        hrv.break_sequence(self._hrv)
        self._pending.clear()
        self._uncounted_from = None
        self._free_held()  # judged good before the gap
        # asystole is checked every second: raised by then, ``asystole_s`` + 1 s after the last QRS
        self._uncounted_wait = round((self.settings.rhythm.asystole_s + 2.0) * fs)
        self._last_beat_time = None
        self._queue.clear()
        self._due = first_index

    def feed(self, block: SampleBlock, *, defer: bool = True) -> EcgOutput:
        """Take the next block; returns what it completes.

        With ``defer`` (the default) the samples wait in a queue until they reach the channel's
        next decision point (the end of the current quality window or VF step, at most ~1 s
        away) and are then processed in one go up to it: the per-call cost of the filters and
        the detector is paid about once per second instead of once per block.  Everything decided at those
        points (validity, released readings, VF and asystole) comes out in exactly the block it
        would come out in undeferred; only the ``beats`` list comes later.  While an asystole is
        on (a beat clears it) or when the caller needs beats at once (``defer=False``, e.g. an
        evidence strip is being captured), every block is processed as it arrives.
        """
        out = EcgOutput()
        flags = block.flags  # empty but for a device that flags its samples: one look-up per block
        if flags and not flags.isdisjoint(_NO_SIGNAL_FLAGS):
            self._flagged(block, out)
            return out
        fs = block.sample_rate_hz
        samples: FloatArray | None = block.samples
        # The usual block (float64 samples in mV) is taken as it is, without the general
        # conversion's calls: this runs for every block that arrives, ten times a second.
        if block.unit != "mV" or type(samples) is not np.ndarray or samples.dtype is not _FLOAT64:
            try:
                samples = to_millivolts(block.samples, block.unit)
            except ValueError:
                samples = None
        if (
            samples is None
            or not MIN_RATE_HZ <= fs <= MAX_RATE_HZ
            or samples.ndim != 1
            or not (samples.dot(samples) <= MAX_SQUARES_MV2 or plausible(samples))  # plausible's fast test, inline
        ):
            # Unusable block: counted, and the next good one starts afresh (never glued).
            self._process_queue(out)
            self.dropped += 1
            out.dropped_blocks = 1
            self._next_index = None
            return out
        if len(samples) == 0:
            return out
        bridge_from: float | None = None
        if fs != self.fs or block.gap_before or block.first_index != self._next_index:
            self._process_queue(out)  # what came before the gap, with its own clock anchor
            if fs == self.fs and self._next_index is not None:
                lost = block.first_index - self._next_index
                if 0 < lost <= self.settings.bridge_gap_s * fs:
                    bridge_from = self.native.sample(self._next_index - 1)
            self._start(fs, block.first_index, bridge=bridge_from is not None)
        self._next_index = block.first_index + len(samples)
        self._anchor = (block.first_index, block.first_sample_time)
        self._clock = block.clock
        if bridge_from is not None:
            self._bridge(bridge_from, float(samples[0]), lost, out)
        if block.pace or self._hold_until > block.first_index:
            samples = self._hold_pacing(samples, block)
        # A copy when the samples are the caller's own array: it may reuse it before they are
        # processed.  Their bytes (~1k instructions less than an array copy): the queue is joined
        # through its bytes anyway.
        self._queue.append(samples.tobytes() if samples is block.samples else samples)
        if defer and not self.rhythm.asystole:
            if self._next_index >= self._due:
                self._process_queue(out, everything=False)
            return out
        self._process_queue(out)
        return out

    def _bridge(self, before: float, after: float, lost: int, out: EcgOutput) -> None:
        """A short gap of ``lost`` samples: the rhythm monitor and the native rhythm's ring go on
        across it on a straight line from the sample ``before`` it to the one ``after``.  Their
        decisions in progress go on with them: the VF steps toward a raise or a clear, the last
        QRS a standstill is counted from.  Started afresh at every gap, a link that lost a
        frame every few seconds kept VF from ever being raised (``bench/ecg_vf.py --lose``).  A
        straight line is no VF, and a step whose window holds it does not keep VF from being
        raised (``RhythmMonitor.bridge``); it has no QRS and no amplitude to call asystole on.  The
        R-peak detector, the quality index and the VT run start afresh after the gap as after
        any other: no detector sees the line as ECG, and no sample is glued to another."""
        line = np.linspace(before, after, lost + 2)[1:-1]
        self.native.feed(line)
        for change in self.rhythm.bridge(line):
            self._rhythm(change, out)

    def _hold_pacing(self, samples: FloatArray, block: SampleBlock) -> FloatArray:
        """The block's samples with the pacing pulses the device marked held out (``pace_blanking``)."""
        first = block.first_index
        before: float | None
        if self._queue:  # the sample before is the last one queued
            last = self._queue[-1]
            before = float(np.frombuffer(last[-8:], dtype=_FLOAT64)[0]) if isinstance(last, bytes) else float(last[-1])
        else:  # or already processed (None at a stream's start)
            before = self.native.sample(first - 1)
        self.pacing_pulses += len(block.pace)
        pulses = [first + p for p in block.pace]
        held, self._hold_until = pace_blanking.blank(
            samples, first, pulses, self._pace_width, before=before, hold_until=self._hold_until
        )
        return held

    def _process_queue(self, out: EcgOutput, everything: bool = True) -> None:
        """Process the queued samples: all of them, or up to the last decision point they reach."""
        if not self._queue:
            return
        # The queued parts are 1-D float64 (``feed`` checked or converted each block), or their bytes.
        samples = join_samples(self._queue)
        self._queue.clear()
        assert self._next_index is not None
        index = self._next_index - len(samples)
        state, params = self.detector.state, self.detector.params
        quality, rhythm = self.quality, self.rhythm
        # Cut the samples at quality-window and VF-step ends, so that each window and each step
        # is judged with exactly the beats decided before its end, whatever the block sizes: the
        # output does not depend on how the device packs its samples.  The detector's filters and
        # the quality index take all the samples up to the last of those ends in one call each
        # (their per-call cost is paid once, not once per piece: every 4 s a window end falls a
        # few samples after a step end); the detector then decides at each end, and each window's
        # verdict is taken at its end.
        window_end = quality.window_start + quality.window
        filtered = 0  # samples given to the detector's filters and the quality index
        windows: list[QualityWindow] = []
        pos = 0
        while pos < len(samples):
            boundary = min(window_end, rhythm.next_step_end())
            if boundary > self._next_index and not everything:
                assert pos == filtered, "a decision point was predicted beyond the last one"
                self._queue.append(samples[pos:])  # nothing is decided in these yet: they wait
                break
            take = min(len(samples) - pos, boundary - index)
            if pos + take > filtered:
                upto = len(samples)
                if not everything:
                    upto = max(pos + take, self._last_decision_point(window_end) - index + pos)
                batch = samples[filtered:upto]
                rpeak_detector.extend(state, batch)  # the block was checked above (1-D, finite)
                windows.extend(ecg_quality.feed(quality, batch))
                filtered = upto
            piece = samples[pos : pos + take]
            pos += take
            index += take
            self.native.feed(piece)  # before the beats: a VT run's start asks about its samples
            for beat in rpeak_detector.decide(state, index, params):
                self._beat(beat.index, beat.energy, beat.decided_index, out)
            for change in rhythm.feed(piece):
                self._rhythm(change, out)
            if index == window_end:
                window_end += quality.window
                window = windows.pop(0)
                for change in rhythm.quality(window):
                    self._rhythm(change, out)
                self._judge(window, out)
        self._due = min(quality.window_start + quality.window, rhythm.next_step_end())

    def _last_decision_point(self, window_end: int) -> int:
        """The last quality-window or VF-step end at or before the last queued sample (the next
        ones are ``window_end`` and ``rhythm.next_step_end()``; each kind recurs at a fixed spacing)."""
        assert self._next_index is not None
        n = self._next_index
        last = -1
        if window_end <= n:
            last = window_end + (n - window_end) // self.quality.window * self.quality.window
        step_end = self.rhythm.next_step_end()
        if step_end <= n:
            period = self.rhythm.step_period
            last = max(last, step_end + (n - step_end) // period * period)
        return last

    def _rhythm(self, change: RhythmChange, out: EcgOutput) -> None:
        if change.condition == VENTRICULAR_FIBRILLATION and change.active:
            self._end_vt(change.index, out)  # VF supersedes it: VT ends as VF begins
        if change.active:
            # HRV starts over (``hrv.restart``): vfdb 424's VF then asystole gave an SDNN of 195 ms
            # during the asystole, over VF "beats" and the rhythm two minutes before them.
            hrv.restart(self._hrv)
        t = self._time(change.index)
        out.rhythm.append(RhythmEvent(t, change.condition, change.active, self._time(change.onset_index)))
        if change.condition == ASYSTOLE:
            self.standstill = None
            if change.active:
                # The beats since the last QRS were not QRS: their rates are never reported, and
                # the rate after the standstill is measured afresh.
                self._pending = [p for p in self._pending if p[0] <= change.onset_index]
                self._uncounted_from = None
                self._held = []
                heart_rate.reset(self.hr)
            if change.active and self.fs is not None:
                levels = rpeak_detector.learnt(self.detector.state)
                self.standstill = StandstillMemory(self.fs, tuple(self.rhythm.qrs_reference), levels)
        if change.condition == VENTRICULAR_FIBRILLATION and change.active:
            # Rates measured since the onset are VF "beats": never reported.
            self._pending = [p for p in self._pending if p[0] < change.onset_index]
            self._held = []  # not QRS by the rhythm monitor, and VF came next
            self._ready = [p for p in self._ready if p[0] < change.onset_index]
            self.readable = True
            if self.alarm.end():
                # VF's low-kurtosis windows read as noise to the quality index: it is the rhythm.
                out.changes.append(ValidityChange(t, True, VENTRICULAR_FIBRILLATION))
        elif (
            change.condition == VENTRICULAR_TACHYCARDIA
            and change.active
            and self._noisy_spell
            and not (self.valid and self.readable)
        ):
            # VT reads as noise to the quality index (see ``_judge``), also before its alarm: the
            # run is found some beats in, a median 6 s after the annotated onset on vfdb, and
            # ending only a spell begun within the run left most (278 of 490 s) of the VT alarms
            # beside a "no valid ECG".  A run of alike wide complexes is a readable signal, as
            # VF's onset ends such a spell too; real noise raises it again once the VT is over.
            self.readable = True
            if self.alarm.end():
                out.changes.append(ValidityChange(t, True, VENTRICULAR_TACHYCARDIA))

    def _beat(self, index: int, energy: float, decided_index: int, out: EcgOutput) -> None:
        out.beats.append(index)
        vt = self.vt
        shape: Shape | None = None
        measured = False
        qrs_like: bool | None = None
        if vt is not None and self.rhythm.small(energy):
            # A small beat: the asystole rule asks whether it is the patient's QRS, smaller (an
            # amplitude drop) or a P, T or flutter wave of a standstill (see ``RhythmMonitor.beat``).
            # The VT detector's reference complex is the patient's own; without one, None (can't tell).
            # Its mirror image is the QRS too, seen along another axis: MIT-BIH 231's normally
            # conducted beats on lead 1 against its bundle-branch-block ones (-0.95 to -0.99).
            reference = vt.reference()
            if reference is not None:
                shape, measured = self._shape(vt, index, decided_index), True
                if shape is not None:
                    qrs_like = abs(correlation(shape.segment, reference[0])) >= self.rhythm.settings.like_corr
        for change in self.rhythm.beat(index, energy, decided_index, qrs_like):
            self._rhythm(change, out)
        if vt is not None and (reference_beat := vt.pending_raw()) is not None:
            # Read now, at this beat's decision point, far past the end of that beat's complex.
            vt.learn_raw(self.native.samples(*vt.raw_span(reference_beat, decided_index)))
        if vt is not None and not self.rhythm.vf_active:
            if not vt.wants_shape(index):
                shape = None
            elif not measured:
                shape = self._shape(vt, index, decided_index)
            vt_change = vt.beat(index, shape)
            if vt_change is not None:
                self._vt(vt_change, out)
        t = self._time(index)
        standstill = self.rhythm.asystole
        counted = self.rhythm.last_qrs == index
        if counted:
            self._uncounted_from = None
            self._free_held()
        elif self._uncounted_from is None and not standstill:
            self._uncounted_from = index
        if standstill and not counted:
            # A P, T or flutter wave of the standstill (``RhythmMonitor.beat``): no rate from it,
            # nor does it end the silence the rate reads (``_silence``).  Taken for beats, they
            # gave rates (16-263 /min) or RR intervals timed within the alarm in 107 of the 120
            # synthetic standstills of bench/ecg_asystole.py.
            return
        self._last_beat_time = t
        iv = heart_rate.add_beat(self.hr, index, t)
        if iv is None:
            return
        if self.rhythm.vf_active or standstill or (vt is not None and vt.active):
            hrv.break_sequence(self._hrv)  # not NN intervals: left out of HRV
        else:
            hrv.add_interval(self._hrv, iv)
        if standstill:
            return  # a QRS, but the rhythm is not back until ``clear_beats`` of them in a row
        # Held until the beat's quality window is judged (see ``_judge``).
        device, clock, pending = self.device_id, self._clock, self._pending
        pending.append((index, VitalReading(device, _RR, iv.rr_ms, _RR_UNIT, t, clock)))
        if iv.heart_rate is not None:
            pending.append((index, VitalReading(device, _HR, iv.heart_rate, _HR_UNIT, t, clock)))

    def _shape(self, vt: VtDetector, index: int, decided_index: int) -> Shape | None:
        st = self.detector.state
        d = st.design
        start = st.next_index - len(st.buf_bp)
        r_bp, r_env = index + d.bp_delay, index + d.feature_delay
        raw = self.native.samples(*vt.raw_span(index, decided_index))
        return measure(st.buf_bp, st.buf_f, start, r_bp, r_env, vt.before, vt.after, decided_index, raw)

    def _vt(self, change: VtChange, out: EcgOutput) -> None:
        if change.active and self.vt is not None and self._artefact_run(change.index):
            # The "wide complexes" are an artefact's cycles over the patient's own rhythm: the run
            # starts over, and the next run to come is asked again.
            self.vt.reset()
            return
        self._rhythm(RhythmChange(change.index, VENTRICULAR_TACHYCARDIA, change.active, change.onset_index), out)

    def _artefact_run(self, index: int) -> bool:
        """Whether the run of "ventricular" beats ending at ``index`` is an artefact over the
        patient's own rhythm in any of the three 5 s stretches ending 0, 1 and 2 s before it (the
        native beats are not found in every one: ``bench/ecg_artefact.py``)."""
        assert self.fs is not None
        return any(self.native.through_artefact(index - round(k * self.fs)) for k in range(3))

    def _end_vt(self, index: int, out: EcgOutput) -> None:
        vt = self.vt
        if vt is not None:
            if vt.active:
                self._rhythm(RhythmChange(index, VENTRICULAR_TACHYCARDIA, False, index), out)
            vt.reset()

    def _time(self, index: int) -> float:
        i0, t0 = self._anchor
        assert self.fs is not None
        return t0 + (index - i0) / self.fs

    def _early_beat(self, window: QualityWindow) -> bool:
        rrs = [r.value for i, r in self._pending if i < window.end_index and r.vital is _RR and r.value is not None]
        return window_verdict.early_beat(rrs, self._released_rr, self.settings.short_rr_ratio)

    def _alike_share(self, window: QualityWindow, band: FloatArray) -> float:
        # The rhythm monitor holds the recent beats (a window holds at most 20: 4 s at 300 /min),
        # by sample index: a window after a gap reads none from before it, bridged or not.
        s = self.settings
        assert self.fs is not None
        beats = self.rhythm.beats_within(window.start_index, window.end_index)
        return window_verdict.alike_share(
            beats, band, window.start_index, window.end_index, self.fs, s.alike_corr, s.alike_beats
        )

    def _remember_rr(self, released: list[_Pending]) -> None:
        rrs = tuple(r.value for _, r in released if r.vital is _RR and r.value is not None)
        if rrs:
            self._released_rr = (*self._released_rr, *rrs)[-8:]

    def _judge(self, window: QualityWindow, out: EcgOutput) -> None:
        s = self.settings
        quality = window.quality
        if self.vt is not None:
            # No signal, or no beat for a while (a standstill after VT): the episode is over.
            if quality in NO_SIGNAL:
                self._end_vt(window.end_index, out)
            elif (vt_change := self.vt.expire(window.end_index)) is not None:
                self._vt(vt_change, out)
        # Asked at every window, not only good ones, so that each window is judged by its own peaks.
        st = self.detector.state
        count, energy = st.n_noise - self._noise_seen[0], st.noise_energy - self._noise_seen[1]
        self._noise_seen = (st.n_noise, st.noise_energy)
        noise_peaks = window_verdict.noise_peaks_high(count, energy, st.signal_level, s.max_noise_ratio)
        quality, smooth_rhythm = window_verdict.refined(
            window,
            noise_peaks=noise_peaks,
            max_slope_floor=s.max_slope_floor,
            early=lambda: self._early_beat(window),
            share=lambda band: self._alike_share(window, band),
        )
        end_time = self._time(window.end_index)
        if self.rhythm.vf_active:
            # No rate in VF, and its windows are not noise: validity is left as it is.
            self._pending = [p for p in self._pending if p[0] >= window.end_index]
            out.readings.extend(p[1] for p in self._ready)  # from before the onset
            self._ready = []
            self.good_streak = 0
            heart_rate.reset(self.hr)
            hrv.break_sequence(self._hrv)
            return
        verdict = window_verdict.verdict(
            quality,
            smooth_rhythm=smooth_rhythm,
            vt_active=self.vt is not None and self.vt.active,
            # Unlike VT's onset, asystole's does not end a spell already on: noise that hides
            # the QRS raises asystole too (MIT-BIH 104 under the noise bursts of
            # bench/ecg_quality.py, 7 times), and there the spell said so first.
            standstill_band=self.rhythm.asystole and window.band is not None,
        )
        good = verdict is Verdict.GOOD
        bad = verdict is Verdict.NOISY or verdict is Verdict.NO_SIGNAL
        self.good_streak = self.good_streak + 1 if good else 0
        # A smooth rhythm's window with a beat not to be trusted holds the readings back as a
        # noisy one does (the next ones wait for ``recover_windows`` good windows): released at
        # once after it, a good window's readings gave 2 more false beats on clean MIT-BIH.
        if self.readable and (bad or smooth_rhythm):
            self.readable = False
            self._released_rr = ()
            self._noisy_spell = quality is EcgQuality.NOISY
            out.unreadable.append(end_time)
        elif not self.readable and self.good_streak >= s.recover_windows:
            self.readable = True
        # Readings held back with a VT or asystole alarm on are explained by it (VF never gets here).
        held = not self.readable and not (self.vt is not None and self.vt.active) and not self.rhythm.asystole
        raised = self.alarm.window(verdict, held=held)
        if raised is True:
            if not self.alarm.for_held:
                self._noisy_spell = self._noisy_spell and quality is EcgQuality.NOISY
                onset = self._time(window.end_index - self.alarm.windows_back() * self.quality.window)
                out.changes.append(ValidityChange(end_time, False, quality.value, onset))
            else:
                # Raised for the readings held back this long (``no_valid_ecg``), on a live signal
                # the rate could not be read from: a VT found in it explains it, as it does noise.
                self._noisy_spell = True
                onset = self._time(window.end_index - s.alarm_held_windows * self.quality.window)
                out.changes.append(ValidityChange(end_time, False, UNREADABLE, onset))
        elif raised is False:
            out.changes.append(ValidityChange(end_time, True, quality.value))

        settled = [p for p in self._pending if p[0] < window.end_index]
        self._pending = [p for p in self._pending if p[0] >= window.end_index]
        uncounted = self._uncounted_from
        if uncounted is not None and window.end_index - uncounted > self._uncounted_wait:
            # No asystole came of it: they are the patient's beats, released as any.
            uncounted = self._uncounted_from = None
            self._free_held()
        if self._ready:
            out.readings.extend(p[1] for p in self._ready)
            self._ready = []
        if good and self.readable:
            self._remember_rr(settled)
            # The patient's own QRS, to be found again through a rhythmic artefact (``native_rhythm``).
            self.native.learn([i for i, r in settled if r.vital is _RR])
            if uncounted is not None:
                # Beats the rhythm monitor did not count as QRS since the last one: the P, T or
                # flutter waves of a standstill, or a new, smaller QRS.  Their readings wait for
                # the next QRS and are dropped if asystole is raised first: released with their
                # windows, they gave RR intervals of 1.4-4 s and rates of 47-81 /min from the first
                # seconds of 19 of the 120 synthetic standstills of bench/ecg_asystole.py (4 since:
                # waves the monitor counts as QRS).
                self._held += [p for p in settled if p[0] >= uncounted]
                settled = [p for p in settled if p[0] < uncounted]
            out.readings.extend(p[1] for p in settled)
            out.readings.extend(self._silence(end_time))
            out.readings.extend(self._hrv_values(end_time))
        elif not good:
            # The rhythm seen through noise is not to be trusted, nor continued across it.
            heart_rate.reset(self.hr)
            hrv.break_sequence(self._hrv)

    def _free_held(self) -> None:
        """The held readings go at the next window's end (``_judge``)."""
        self._ready += self._held
        self._held = []

    def _silence(self, now: float) -> Iterable[VitalReading]:
        last = self._last_beat_time
        hr = None if last is None else heart_rate.silence_rate(self.hr, now - last)
        if hr is None:
            return ()
        return (VitalReading(self.device_id, _HR, hr, _HR_UNIT, now, self._clock),)

    def _hrv_values(self, now: float) -> Iterable[VitalReading]:
        if self._last_hrv is not None and now - self._last_hrv < self.settings.hrv_every_s:
            return ()
        values = hrv.values(self._hrv, now)
        if values is None:
            return ()
        self._last_hrv = now
        return (
            VitalReading(self.device_id, Vital.HRV_SDNN, values.sdnn_ms, "ms", now, self._clock),
            VitalReading(self.device_id, Vital.HRV_RMSSD, values.rmssd_ms, "ms", now, self._clock),
        )

    def _flagged(self, block: SampleBlock, out: EcgOutput) -> None:
        """A block the device flags lead off or saturated: no signal, whatever its samples look
        like (a front-end whose lead is off may give low, quiet noise: a standstill to the
        rhythm rules).  Set aside as a gap is, and unlike an unusable block not counted as
        dropped: the device is there and says why it has no ECG (no "no data" alarm)."""
        n = len(block.samples)
        if n == 0:
            return
        self._process_queue(out)  # the samples before it, as before a gap
        self._next_index = None  # the next unflagged block starts afresh, as after a gap
        # Episodes on are not ended here but go on, as across a gap: a new rhythm monitor has no
        # last beat to count a standstill from, so an asystole ended at a lead-off could not be
        # raised again on the standstill after it.  Readings come back after ``recover_windows``
        # good windows, as after noise: re-attached electrodes settle for a few seconds.
        after_good, self.good_streak = self.good_streak > 0, 0
        if self.readable:
            self.readable = False
            self._released_rr = ()
            self._noisy_spell = False
            out.unreadable.append(block.first_sample_time)
        if DeviceFlag.LEAD_OFF in block.flags:
            # One technical alarm per cause: the driver reports a lead off as a ``sensor_off``
            # event (detail "lead off"), so no "no valid ECG" is raised beside it, nor for the
            # readings it held back.
            self._saturated = (0, 0.0)
            self.alarm.explained()
            return
        # Saturated: no driver event says so, so it counts as a saturated quality window would (no
        # signal, "no valid ECG" at once), one per window's length of flagged samples, counted
        # afresh when the last window judged before them was good: intermittent saturation adds
        # up, as its short runs leave no window whole between them to be judged.  It clears
        # after ``alarm_clear_windows`` good windows, as from any cause.
        fs = block.sample_rate_hz
        if not MIN_RATE_HZ <= fs <= MAX_RATE_HZ:
            return
        count, onset = self._saturated
        if count == 0 or after_good:
            count, onset = 0, block.first_sample_time
        window = max(1, round(_QUALITY_WINDOW_S * fs))
        for whole in range(count // window + 1, (count + n) // window + 1):
            if self.alarm.window(Verdict.NO_SIGNAL):
                t = block.first_sample_time + (whole * window - count) / fs
                out.changes.append(ValidityChange(t, False, EcgQuality.SATURATED.value, onset))
        self._saturated = (count + n, onset)
