"""Rhythm alarms through the real pipeline: VF holds the heart rate and raises a high-severity
alarm, noise stays technical, extreme brady/tachycardia have their own limits and delays."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.config.processing import AlarmSection, EcgAlarmSection, Limit, VitalLimits
from gateway.pipeline import NO_VALID_ECG, PatientSetup, Pipeline, PipelineOutput
from gateway.records import AlarmEvent, AlarmRecord, SampleBlock, Vital, VitalReading
from gateway.signal.ecg_channel import EcgChannel
from gateway.signal.ecg_rhythm import ASYSTOLE, VENTRICULAR_FIBRILLATION, RhythmMonitor
from tests.synthetic_ecg import standstill

FIXTURES = Path(__file__).parent.parent / "hil_fixtures"
T0 = 1_780_000_000.0


def pipeline(ecg: EcgAlarmSection | None = None) -> Pipeline:
    counter = itertools.count(1)
    setup = PatientSetup("p-a", AlarmSection().limits, {"strap": "replay"})
    return Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup}, ecg_alarms=ecg)


def feed_file(pl: Pipeline, rel: str) -> tuple[PipelineOutput, float]:
    rec = wfdb.rdrecord(str(FIXTURES / rel), channels=[0])
    fs = float(rec.fs)
    x = np.nan_to_num(rec.p_signal[:, 0]) * 1000.0  # uV, as a strap sends
    out = PipelineOutput()
    step = round(0.1 * fs)
    for start in range(0, len(x), step):
        block = SampleBlock("strap", "ecg", fs, T0 + start / fs, x[start : start + step], "uV", first_index=start)
        out.extend(pl.feed("p-a", block))
    return out, fs


def alarms(out: PipelineOutput, condition: str) -> list[AlarmRecord]:
    return [r for r in out.records if isinstance(r, AlarmRecord) and r.condition == condition]


def test_fibrillation_raises_a_high_alarm_and_holds_the_heart_rate() -> None:
    out, _ = feed_file(pipeline(), "ecg_vf/vfdb_426_615s")  # sinus, VF from 30 s to the end (60 s)
    vf = alarms(out, "ventricular_fibrillation")
    assert [a.event for a in vf] == [AlarmEvent.RAISED]
    raised = vf[0].time.timestamp() - T0
    assert 30 < raised <= 40
    assert vf[0].severity == "high" and not vf[0].technical and vf[0].device == "strap"
    hr = [r for r in out.accepted if r.vital is Vital.HEART_RATE]
    assert [r for r in hr if r.time < T0 + 28]  # the sinus part had a rate...
    assert not [r for r in hr if r.time >= T0 + raised]  # ...VF has none
    # The 'beats' in VF are no rate: no rate alarm comes out of them.
    assert not alarms(out, "heart_rate_high") and not alarms(out, "extreme_tachycardia")
    # The quality index calls VF's first windows noise (low kurtosis), but their complexes are
    # mostly alike, so they count neither way toward "no valid ECG" (``EcgChannel._judge``):
    # none is raised before the VF alarm (one was, and VF's start cleared it), and VF is not
    # called noise while it lasts.
    assert alarms(out, NO_VALID_ECG) == []


@pytest.mark.parametrize(
    ("rel", "annotated_onset_s"), [("ecg_vf/vfdb_426_615s", 30.0), ("ecg_vf/vfdb_429_1835s", 20.0)]
)
def test_fibrillation_onset_is_marked_at_the_first_vf_like_window_middle(rel: str, annotated_onset_s: float) -> None:
    """The onset the alarm and its evidence strip carry: the middle of the first VF-like window
    (its end is ~2 s late), which on these excerpts is within a second of the annotated onset."""
    rec = wfdb.rdrecord(str(FIXTURES / rel), channels=[0])
    fs = float(rec.fs)
    x = np.nan_to_num(rec.p_signal[:, 0])
    channel = EcgChannel("strap")
    step = round(0.1 * fs)
    raised = []
    for start in range(0, len(x), step):
        block = SampleBlock("strap", "ecg", fs, T0 + start / fs, x[start : start + step], "mV", first_index=start)
        raised += [e for e in channel.feed(block).rhythm if e.condition == VENTRICULAR_FIBRILLATION and e.active]
    assert len(raised) == 1
    vf = channel.rhythm.vf
    first_vf_like_end = vf.onset_index  # the detector's own mark: the first VF-like step's end
    half_window = vf.window * vf.decimate // 2
    assert raised[0].onset_time - T0 == pytest.approx((first_vf_like_end - half_window) / fs)
    assert abs(raised[0].onset_time - T0 - annotated_onset_s) <= 1.0


def test_electrode_motion_noise_is_technical_not_fibrillation() -> None:
    out, _ = feed_file(pipeline(), "ecg_vf/nstdb_119e00_300s")  # 119 with em noise at 0 dB
    assert not alarms(out, "ventricular_fibrillation")
    assert not alarms(out, "asystole")
    assert alarms(out, NO_VALID_ECG)


def test_a_run_of_ventricular_tachycardia_is_not_called_fibrillation() -> None:
    out, _ = feed_file(pipeline(), "ecg_vf/vfdb_615_600s")
    assert not alarms(out, "ventricular_fibrillation")


def feed_rates(pl: Pipeline, rates: list[float]) -> PipelineOutput:
    out = PipelineOutput()
    for i, v in enumerate(rates):
        out.extend(pl.feed("p-a", VitalReading("strap", Vital.HEART_RATE, v, "/min", T0 + i)))
    return out


def test_extreme_tachycardia_raises_before_the_high_rate_alarm_and_clears_with_hysteresis() -> None:
    out = feed_rates(pipeline(), [80] * 5 + [185] * 15 + [165] * 5 + [150] * 5)
    ext = alarms(out, "extreme_tachycardia")
    high = alarms(out, "heart_rate_high")
    assert [a.event for a in ext] == [AlarmEvent.RAISED, AlarmEvent.CLEARED]
    assert ext[0].time.timestamp() - T0 == 10  # 5 s after the first value above 170 (at 5 s)
    assert high[0].time.timestamp() - T0 == 15  # the ordinary limit waits its 10 s
    assert ext[0].severity == "high" and ext[0].threshold == 170
    assert ext[1].time.timestamp() - T0 == 25  # 165 is not yet below the clear level (160)


def test_extreme_bradycardia_has_its_own_configurable_limit() -> None:
    ecg = EcgAlarmSection(extreme_bradycardia=Limit(raise_at=30, clear_at=33, min_duration_s=3, severity="high"))
    out = feed_rates(pipeline(ecg), [70] * 3 + [32] * 6 + [28] * 6 + [40] * 3)
    ext = alarms(out, "extreme_bradycardia")
    assert [a.event for a in ext] == [AlarmEvent.RAISED, AlarmEvent.CLEARED]
    assert ext[0].time.timestamp() - T0 == 12  # below 30 from 9 s, for 3 s
    assert alarms(out, "heart_rate_low")


def test_raised_extreme_alarm_survives_a_restart_with_its_id() -> None:
    pl = pipeline()
    raised = alarms(feed_rates(pl, [190] * 8), "extreme_tachycardia")
    blob = pl.snapshot("p-a")
    assert blob is not None
    fresh = pipeline()
    assert fresh.restore("p-a", blob)
    assert fresh.active_alarm_count() >= 1
    cleared = alarms(feed_rates(fresh, [80] * 2), "extreme_tachycardia")
    assert [a.event for a in cleared] == [AlarmEvent.CLEARED]
    assert cleared[0].alarm_id == raised[0].alarm_id


def test_config_rejects_extreme_limits_inside_the_ordinary_ones() -> None:
    with pytest.raises(ValidationError, match=r"extreme_bradycardia\.raise_at must be below heart_rate\.low"):
        AlarmSection(ecg=EcgAlarmSection(extreme_bradycardia=Limit(raise_at=50, clear_at=55)))
    with pytest.raises(ValidationError, match=r"extreme_tachycardia\.raise_at must be above heart_rate\.high"):
        AlarmSection(
            limits={"heart_rate": VitalLimits(high=Limit(raise_at=180))},
        )
    with pytest.raises(ValidationError, match="clear_at must be >= its raise_at"):
        EcgAlarmSection(extreme_bradycardia=Limit(raise_at=30, clear_at=25))
    with pytest.raises(ValidationError, match="asystole_s"):
        EcgAlarmSection(asystole_s=20)


def test_regular_beats_at_a_sinus_rate_veto_a_vf_like_waveform() -> None:
    rec = wfdb.rdrecord(str(FIXTURES / "ecg_vf" / "vfdb_426_615s"), channels=[0])
    fs = float(rec.fs)
    x = np.nan_to_num(rec.p_signal[int(31 * fs) :, 0])  # fibrillation throughout: VF on its own
    alone = RhythmMonitor(fs)
    assert [c.condition for c in alone.feed(x) if c.active] == [VENTRICULAR_FIBRILLATION]
    paced = RhythmMonitor(fs)
    events = []
    step = round(0.1 * fs)
    for start in range(0, len(x), step):
        for b in range(start, start + step):
            if b % round(0.75 * fs) == 0:  # a beat every 0.75 s (80 /min), decided 0.2 s later
                paced.beat(b - round(0.2 * fs), 1.0, b)
        events += paced.feed(x[start : start + step])
    assert not [c for c in events if c.condition == VENTRICULAR_FIBRILLATION]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 400), min_size=1, max_size=10))
def test_rhythm_events_do_not_depend_on_block_packing(sizes: list[int]) -> None:
    rec = wfdb.rdrecord(str(FIXTURES / "ecg_vf" / "vfdb_426_615s"), channels=[0])
    fs = float(rec.fs)
    x = np.nan_to_num(rec.p_signal[int(15 * fs) : int(50 * fs), 0])

    def run(split: list[int]) -> list[tuple[float, str, bool]]:
        ch = EcgChannel("strap")
        out = []
        pos, i = 0, 0
        while pos < len(x):
            n = split[i % len(split)]
            block = SampleBlock("strap", "ecg", fs, T0 + pos / fs, x[pos : pos + n], "mV", first_index=pos)
            out += [(e.time, e.condition, e.active) for e in ch.feed(block).rhythm]
            pos += n
            i += 1
        return out

    reference = run([25])
    assert [(c, a) for _, c, a in reference] == [(VENTRICULAR_FIBRILLATION, True)]
    got = run(sizes)
    assert [(c, a) for _, c, a in got] == [(c, a) for _, c, a in reference]
    assert [t for t, _, _ in got] == pytest.approx([t for t, _, _ in reference], abs=1e-6)


def asystole_changes(x: np.ndarray, fs: float) -> list[tuple[float, bool]]:
    channel = EcgChannel("strap")
    step = round(0.1 * fs)
    out: list[tuple[float, bool]] = []
    for a in range(0, len(x), step):
        got = channel.feed(SampleBlock("strap", "ecg", fs, a / fs, x[a : a + step], "uV", first_index=a))
        out += [(e.time, e.active) for e in got.rhythm if e.condition == ASYSTOLE]
    return out


@pytest.mark.parametrize(("no_qrs_until_s", "raised"), [(46.5, False), (70.0, True)])
def test_time_the_signal_was_gone_does_not_count_toward_asystole(no_qrs_until_s: float, raised: bool) -> None:
    """The amplifier pinned at its rail for 0.7 s, then no QRS while it recovers (MIT-BIH 116, at
    1390.8 s: a false asystole alarm).  The 6 s are counted from the end of the saturated window
    (40-44 s here), so 6.5 s without QRS is no asystole and a standstill still is one."""
    x, fs, last, _ = standstill(40.0, no_qrs_until_s)
    x[round(40.0 * fs) : round(40.7 * fs)] = -5000.0  # at the rail
    changes = asystole_changes(x, fs)
    if not raised:
        assert changes == []
    else:
        assert changes and changes[0][1] and 44.0 + 6.0 <= changes[0][0] <= 44.0 + 7.0, (last, changes)


def test_flutter_waves_left_in_a_standstill_do_not_become_the_qrs_reference() -> None:
    """Atrial flutter under a ventricular standstill (MIT-BIH 222 in ``bench/ecg_asystole.py``):
    the R-peak detector's search-back takes the flutter waves, at 0.35-0.45 of the QRS energy.
    They count as QRS, and when each entered the reference its median fell onto them within five
    waves and every later wave counted: no asystole in 30 s.  Waves unlike the patient's QRS stay
    out of it, so the smaller waves after them (0.2-0.25) are no QRS and asystole is raised."""
    x, fs, last, back = standstill(40.0, 70.0)
    t = np.arange(len(x)) / fs
    for c in np.arange(last + 0.6, 69.5, 0.9):  # broad waves (sd 30 ms), 1.5 mV then 0.9 mV
        x += (1500.0 if c < last + 5.0 else 900.0) * np.exp(-0.5 * ((t - c) / 0.03) ** 2)
    changes = asystole_changes(x, fs)
    assert changes and changes[0][1] and last + 6.0 < changes[0][0] < back, (last, changes)
    assert [a for _, a in changes] == [True, False]


@pytest.mark.parametrize("qrs_like", [True, None])
def test_smaller_beats_shaped_like_the_qrs_or_unknown_still_enter_the_reference(qrs_like: bool | None) -> None:
    """Only the waves known to be unlike the patient's QRS are kept out of the reference: the
    patient's own smaller complexes (or any, when the shape cannot be told) bring it down as
    before, and the P wave-sized beats after them then count."""
    mon = RhythmMonitor(250.0)
    for k in range(8):
        mon.beat(250 * k, 1.0)
    assert mon.small(0.4)
    for k in range(8, 16):
        mon.beat(250 * k, 0.4, None, qrs_like)
    assert mon.qrs_reference == [0.4] * 8
    mon.beat(250 * 16, 0.15, None, qrs_like)  # under 0.3 of the old reference, not of the new one
    assert mon.qrs_reference[-1] == 0.15  # a QRS
    unlike = RhythmMonitor(250.0)
    for k in range(8):
        unlike.beat(250 * k, 1.0)
    for k in range(8, 16):
        unlike.beat(250 * k, 0.4, None, qrs_like=False)
    assert unlike.qrs_reference == [1.0] * 8
    unlike.beat(250 * 16, 0.15, None, qrs_like=False)
    assert unlike.qrs_reference == [1.0] * 8  # no QRS


@pytest.mark.parametrize(
    ("rr_s", "qrs_like", "adapts"),
    [
        ([0.8, 1.6] * 4, False, False),  # MIT-BIH 222's flutter waves in a standstill, every cycle or two
        ([1.0] * 8, False, True),  # a regular rhythm of smaller, differently shaped complexes
        ([0.8, 1.6] * 4, True, True),  # the patient's QRS grown smaller, in atrial fibrillation
        ([0.8, 1.6] * 4, None, True),  # shape unknown: as before
    ],
)
def test_small_beats_unlike_the_qrs_become_the_reference_only_when_regular(
    rr_s: list[float], qrs_like: bool | None, adapts: bool
) -> None:
    """Beats under ``weak_ratio`` of the QRS that keep coming are an amplitude change, and become
    the reference; when shaped unlike the QRS, only at a regular rate: flutter waves left in a
    synthetic standstill of MIT-BIH 222, taken every cycle or two, are not a smaller QRS."""
    fs = 250.0
    mon = RhythmMonitor(fs)
    for k in range(8):
        mon.beat(round(0.8 * fs) * k, 1.0)
    t = 8 * 0.8
    for rr in rr_s:
        t += rr
        mon.beat(round(t * fs), 0.2, None, qrs_like)
    assert (mon.qrs_reference[-1] == 0.2) is adapts, mon.qrs_reference


@pytest.mark.parametrize(
    ("label", "waves_s"),
    [
        ("isolated", [4.5, 4.85, 10.3]),  # MIT-BIH 200 and 228 in bench/ecg_asystole.py: raised at 16.7 and 17.5 s
        ("a run twice as fast as the QRS", [2.4 + 0.43 * k for k in range(12)]),  # 222: 15.2 s
    ],
)
def test_waves_out_of_a_pause_do_not_hold_asystole_off(label: str, waves_s: list[float]) -> None:
    """Broad waves at 0.4 of the QRS energy, unlike it, left in a standstill: seconds after the
    last QRS, or in a run at twice its rate.  Each counted as a QRS and the alarm came 6 s after
    the last of them (16-17 s here), or never for the run; they come out of a pause, not as a
    rhythm, so asystole is raised 6-7 s after the last QRS."""
    x, fs, last, _ = standstill(40.0, 70.0)
    t = np.arange(len(x)) / fs
    for c in waves_s:
        x += 1500.0 * np.exp(-0.5 * ((t - last - c) / 0.03) ** 2)
    changes = asystole_changes(x, fs)
    assert changes and changes[0][1] and last + 6.0 <= changes[0][0] <= last + 7.5, (label, last, changes)


def asystole_changes_of(beats: list[tuple[float, float, bool | None]], until_s: float) -> list[tuple[float, bool]]:
    """A rhythm monitor given ``beats`` (time in s, energy, qrs_like) as they come, over a 1 Hz
    baseline of 0.2 mV (a live signal); every asystole change (time in s, raised?)."""
    fs = 250.0
    mon = RhythmMonitor(fs)
    x = 0.2 * np.sin(2 * np.pi * np.arange(round(until_s * fs)) / fs)
    pending = sorted(beats)
    out: list[tuple[float, bool]] = []
    for a in range(0, len(x), 25):
        while pending and pending[0][0] * fs < a + 25:
            at, energy, like = pending.pop(0)
            out += [(c.index / fs, c.active) for c in mon.beat(round(at * fs), energy, None, like)]
        out += [(c.index / fs, c.active) for c in mon.feed(x[a : a + 25]) if c.condition == ASYSTOLE]
    return out


def asystole_raised_at(beats: list[tuple[float, float, bool | None]], until_s: float) -> float:
    """When asystole was first raised (``asystole_changes_of``), in s (inf: never)."""
    return next((at for at, raised in asystole_changes_of(beats, until_s) if raised), math.inf)


QRS = [(float(k), 1.0, None) for k in range(10)]  # RR 1 s, the last at 9 s


@pytest.mark.parametrize("qrs_like", [True, False, None])
def test_small_beats_do_not_become_the_reference_once_asystole_is_raised(qrs_like: bool | None) -> None:
    """In a long standstill the search-back comes to take the P waves one after the other, at a
    regular rate and a fifth of the QRS: taken for the patient's QRS grown smaller, they cleared
    the alarm 20-65 s into 27 of 119 synthetic standstills of 90 s.  Before the raise they still
    hold it off (an amplitude change); once it is raised only a QRS clears it."""
    p_waves = [(16.0 + k, 0.2, qrs_like) for k in range(40)]  # from 16 s, after the raise at 15-16 s
    back = [(56.0 + k, 1.0, None) for k in range(14)]
    changes = asystole_changes_of([*QRS, *p_waves, *back], 70.0)
    assert [on for _, on in changes] == [True, False], changes
    assert 15.0 <= changes[0][0] < 16.0
    assert 60.0 <= changes[1][0] < 61.0  # the fifth QRS back
    early = asystole_changes_of([*QRS, *[(10.0 + k, 0.2, qrs_like) for k in range(40)]], 50.0)
    assert early == [], early  # regular from the first second: an amplitude change, never raised


def test_a_small_beat_unlike_the_qrs_counts_only_as_the_rhythm_going_on() -> None:
    # Out of a pause (over 2.5 RR after the last beat that counted): no QRS, raised 6-7 s after 9 s.
    assert 15.0 <= asystole_raised_at([*QRS, (13.5, 0.4, False), (13.85, 0.4, False), (19.3, 0.4, False)], 40.0) < 16.0
    # One RR after the last QRS: the rhythm goes on, and so does the next one within 2.5 RR of it.
    assert 17.0 <= asystole_raised_at([*QRS, (10.0, 0.4, False), (12.0, 0.4, False)], 40.0) < 19.5
    # Like the QRS, or under weak_ratio: as before (a QRS wherever it comes; never one).
    assert 19.0 <= asystole_raised_at([*QRS, (13.5, 0.4, True)], 40.0) < 20.5
    assert 15.0 <= asystole_raised_at([*QRS, (10.0, 0.2, False)], 40.0) < 16.0


def test_a_smaller_rhythm_unlike_the_qrs_holds_asystole_off_across_missed_beats() -> None:
    """A patient's beats turning smaller and differently shaped (MIT-BIH 124 at 312 s: complexes
    at 0.4 of the QRS, inverted, for minutes) go on counting, and when two of them are missed (a
    2.4 s gap at RR 0.8 s, over 2.5 RR) the next ``unlike_run`` of them at the rhythm's rate count
    again: no asystole.  A run of them twice as fast does not."""
    qrs = [(0.8 * k, 1.0, None) for k in range(12)]  # the last at 8.8 s
    small = [(8.8 + 0.8 * k, 0.4, False) for k in range(1, 40) if k not in (8, 9)]
    assert asystole_raised_at([*qrs, *small], 40.0) == math.inf
    fast = [(8.8 + 2.4 + 0.35 * k, 0.4, False) for k in range(12)]
    assert 14.8 <= asystole_raised_at([*qrs, *fast], 40.0) < 16.0


def test_the_qrs_upside_down_and_smaller_is_still_the_qrs() -> None:
    """The patient's complexes turning over at 0.45 of their size from 40 s (another axis: MIT-BIH
    231's normally conducted beats on lead 1 against its bundle-branch-block ones correlate -0.95
    to -0.99 with them).  They are the QRS, not waves unlike it: they enter the QRS reference
    within 10 s (it took until the VT detector's reference complex turned over, 30-35 s here), and
    three beats missed in a row later (a 3.5 s gap) raise no asystole."""
    rel = "ecg/mitdb_119_0s"
    rec = wfdb.rdrecord(str(FIXTURES / rel), channels=[0])
    ann = wfdb.rdann(str(FIXTURES / rel), "atr")
    fs = float(rec.fs)
    x = rec.p_signal[: int(90 * fs), 0] * 1000.0
    beats = [int(r) for r in ann.sample if 40 * fs < r < len(x) - 0.08 * fs]
    missed = [r for r in beats if r > 55 * fs][:3]
    for r in beats:
        a, b = int(r - 0.06 * fs), int(r + 0.08 * fs)
        line = np.linspace(x[a], x[b], b - a)
        x[a:b] = line if r in missed else line - 0.45 * (x[a:b] - line)
    channel = EcgChannel("strap")
    step = round(0.1 * fs)
    events = []
    reference: dict[int, list[float]] = {}
    for a in range(0, len(x), step):
        got = channel.feed(SampleBlock("strap", "ecg", fs, a / fs, x[a : a + step], "uV", first_index=a))
        events += [e for e in got.rhythm if e.condition == ASYSTOLE]
        if a in (round(40 * fs), round(50 * fs)):
            reference[round(a / fs)] = channel.rhythm.qrs_reference
    assert events == []
    assert max(reference[50]) < 0.6 * min(reference[40]), reference


def feed_signal(x: np.ndarray, fs: float) -> PipelineOutput:
    pl, out, step = pipeline(), PipelineOutput(), round(0.1 * fs)
    for start in range(0, len(x), step):
        block = SampleBlock("strap", "ecg", fs, T0 + start / fs, x[start : start + step], "uV", first_index=start)
        out.extend(pl.feed("p-a", block))
    return out


def spans(out: PipelineOutput, condition: str) -> list[tuple[float, float]]:
    """(raised, cleared) times of ``condition``'s alarms, from the start; inf if never cleared."""
    got: list[tuple[float, float]] = []
    for r in alarms(out, condition):
        t = r.time.timestamp() - T0
        if r.event is AlarmEvent.RAISED:
            got.append((t, math.inf))
        elif got:
            got[-1] = (got[-1][0], t)
    return got


def test_a_standstill_is_asystole_without_a_no_valid_ecg_beside_it() -> None:
    """The demo's bedside patient (vfdb 424): asystole after the VF, 175.3 to 196.3 s.  With the QRS
    gone, the quality index finds the windows noisy for their low kurtosis alone; before, "no valid
    ECG" came up at 180.0 s and stayed beside the asystole alarm, saying the standstill was an
    artefact.  It comes up at 204 s now, in the noisy nodal rhythm after it.  (A spell raised before
    the asystole alarm stays on: ``ecg_channel``.)"""
    out, _ = feed_file(pipeline(), "ecg/vfdb_424_1200s")
    ((raised, cleared),) = spans(out, ASYSTOLE)
    assert 174.0 <= raised <= 177.0 and 194.0 <= cleared <= 198.0
    noisy = spans(out, NO_VALID_ECG)
    assert not [s for s in noisy if s[1] > raised and s[0] < cleared], noisy
    assert [s for s in noisy if cleared < s[0] < cleared + 10.0]


def test_electrode_motion_during_asystole_still_raises_no_valid_ecg() -> None:
    """A jump in amplitude is no standstill's: a 1 Hz swing of 40 mV peak-to-peak (an electrode
    pulled about) from 52 to 64 s, the QRS cut out from 40 to 76 s.  The swing makes no beat, so
    asystole stays on, and its windows, noisy for their amplitude, raise "no valid ECG"; noisy
    for their kurtosis alone, they would not (the test above)."""
    x, fs, _, _ = standstill(40.0, 76.0)
    a, b = round(52.0 * fs), round(64.0 * fs)
    x[a:b] += 20_000.0 * np.sin(2 * np.pi * 1.0 * np.arange(b - a) / fs)  # uV
    out = feed_signal(x, fs)
    ((raised, cleared),) = spans(out, ASYSTOLE)
    assert raised < 52.0 and cleared > 76.0
    assert [s for s in spans(out, NO_VALID_ECG) if 52.0 <= s[0] <= 66.0]


def test_hrv_is_not_taken_over_a_lethal_rhythm_and_starts_over_after_it() -> None:
    """vfdb 424 (the demo's third patient): VF for two minutes, then asystole.  HRV was given out
    during the asystole (SDNN 195 ms), taken over VF "beats" and the rhythm before them.  No HRV
    while a lethal-rhythm alarm is on, and the next one only from NN intervals after its raise."""
    out, _ = feed_file(pipeline(), "ecg/vfdb_424_1200s")
    episodes = []
    for condition in (VENTRICULAR_FIBRILLATION, ASYSTOLE, "ventricular_tachycardia"):
        times = [a.time.timestamp() for a in alarms(out, condition)]
        episodes += list(itertools.zip_longest(times[::2], times[1::2], fillvalue=math.inf))
    assert any(raised < math.inf for raised, _ in episodes), "the excerpt raises VF and asystole"
    hrv = [r.time for r in out.accepted if r.vital is Vital.HRV_SDNN]
    rr = [r.time for r in out.accepted if r.vital is Vital.RR_INTERVAL]
    for raised, cleared in episodes:
        assert not [t for t in hrv if raised <= t <= cleared], (raised, cleared)
        later = [t for t in hrv if t > cleared]
        if later:  # HRV started over: 20 intervals at least since the raise
            assert len([t for t in rr if raised < t <= later[0]]) >= 20


def test_no_rate_is_read_from_the_waves_of_a_standstill() -> None:
    """MIT-BIH 119 with its QRS cut out from 40 to 70 s (P and T waves kept): while the asystole
    alarm was on, the waves the R-peak detector took gave RR intervals of 1.8-5.4 s and rates of
    57, 48, 39 ... /min.  The only rate during the alarm is now the silence's (the lowest reported,
    15 /min); the rate comes back with the QRS."""
    x, fs, _, back = standstill()
    channel = EcgChannel("strap")
    step = round(0.1 * fs)
    on = False
    during: list[VitalReading] = []
    after: list[VitalReading] = []
    for start in range(0, len(x), step):
        block = SampleBlock("strap", "ecg", fs, start / fs, x[start : start + step], "uV", first_index=start)
        got = channel.feed(block)
        for event in got.rhythm:
            if event.condition == ASYSTOLE:
                on = event.active
        (during if on else after).extend(r for r in got.readings if r.vital in (Vital.HEART_RATE, Vital.RR_INTERVAL))
    assert during, "the silence's rate is reported through the standstill"
    assert {(r.vital, r.value) for r in during} == {(Vital.HEART_RATE, 15.0)}
    back_rates = [r.value for r in after if r.vital is Vital.HEART_RATE and r.time > back and r.value is not None]
    assert back_rates and 50 <= back_rates[-1] <= 90


def _rr_readings(x: np.ndarray, fs: float) -> tuple[list[tuple[float, float, float]], float]:
    """(beat time, RR ms, time of the block that gave it out) of every RR interval, and when
    asystole was first raised (inf if never)."""
    channel = EcgChannel("strap")
    step = round(0.1 * fs)
    rr: list[tuple[float, float, float]] = []
    raised = math.inf
    for start in range(0, len(x), step):
        block = SampleBlock("strap", "ecg", fs, start / fs, x[start : start + step], "uV", first_index=start)
        got = channel.feed(block)
        rr += [(r.time, r.value, start / fs) for r in got.readings if r.vital is Vital.RR_INTERVAL and r.value]
        raised = min([raised, *(e.time for e in got.rhythm if e.condition == ASYSTOLE and e.active)])
    return rr, raised


@pytest.mark.parametrize("start_s", [20.0, 24.0, 40.0, 44.0, 48.0])
def test_no_rr_interval_is_read_from_the_waves_before_the_asystole_alarm(start_s: float) -> None:
    """The P waves the search-back takes in the first seconds of a standstill, which the rhythm
    monitor does not count as QRS, gave RR intervals of 1.7-3.5 s before the raise (MIT-BIH 119,
    its QRS cut out from each of these starts): their readings now wait for the next QRS, and
    go when asystole is raised instead."""
    x, fs, last, _ = standstill(start_s, 75.0)
    rr, raised = _rr_readings(x, fs)
    assert raised < 75.0
    assert not [r for r in rr if last + 0.15 < r[0] < raised], rr


def test_a_pause_that_ends_before_the_alarm_keeps_its_readings() -> None:
    """A 5.8 s pause (MIT-BIH 119's QRS cut out from 40 to 45 s) ends with the QRS before any
    alarm: the wave taken at 41.9 s, not counted as a QRS, waited for that QRS and then came out
    (a reading held is delayed, never lost)."""
    x, fs, last, back = standstill(40.0, 45.0)
    rr, raised = _rr_readings(x, fs)
    assert raised == math.inf
    waves = [r for r in rr if last + 0.15 < r[0] < back - 0.15]
    assert [round(t, 1) for t, _, _ in waves] == [41.9], rr
    assert waves[0][2] >= back  # out once the rhythm was back, not at its window's end
