"""Rhythm alarms across a break in the samples: a gap (a BLE drop, a rate change) or the daemon's
restart.  An episode on when the samples stop stays on, and the samples after the break end it --
each raised VF, asystole or VT alarm gets its one clear, under its own alarm_id, and is not raised
twice."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.processing import AlarmSection
from gateway.pipeline import PatientSetup, Pipeline, PipelineOutput
from gateway.records import AlarmEvent, AlarmRecord, SampleBlock
from gateway.signal.ecg_rhythm import ASYSTOLE, VENTRICULAR_FIBRILLATION, RhythmMonitor, RhythmSettings
from gateway.signal.vf_detector import VfDetector, VfParams
from tests.synthetic_ecg import beats_back, standstill

FIXTURES = Path(__file__).parent.parent / "hil_fixtures"
T0 = 1_780_000_000.0
VFL_429 = "ecg_vf/vfdb_429_1835s"  # bigeminy, ventricular flutter 20-29 s, bigeminy again (60 s)
VF_426 = "ecg_vf/vfdb_426_615s"  # sinus rhythm, ventricular fibrillation from 30 s (60 s)
VT_615 = "ecg_vf/vfdb_615_300s"  # atrial fibrillation, VT 26.8-30.8 s, atrial fibrillation (40 s)
Events = list[tuple[AlarmEvent, str, float]]  # (raised or cleared, alarm_id, seconds from T0)


def pipeline() -> Pipeline:
    counter = itertools.count(1)
    setup = PatientSetup("p-a", AlarmSection().limits, {"strap": "replay"})
    return Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup})


def signal(rel: str) -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(FIXTURES / rel), channels=[0])
    return np.nan_to_num(rec.p_signal[:, 0]) * 1000.0, float(rec.fs)  # uV, as a strap sends


def feed(
    pl: Pipeline,
    x: np.ndarray,
    fs: float,
    *,
    start_s: float = 0.0,
    stop_s: float | None = None,
    gap: tuple[float, float] | None = None,
    lose_every_s: float | None = None,
) -> PipelineOutput:
    """Feed in 100 ms blocks, the samples of ``gap`` (seconds) left out (the next block says so),
    and with ``lose_every_s`` one block lost every that many seconds (a lossy link)."""
    out = PipelineOutput()
    step = round(0.1 * fs)
    stop = len(x) if stop_s is None else round(stop_s * fs)
    after_gap = False
    every = None if lose_every_s is None else round(lose_every_s * fs / step)
    for s in range(round(start_s * fs), stop, step):
        if (gap is not None and gap[0] * fs <= s < gap[1] * fs) or (
            every is not None and s // step % every == every - 1
        ):
            after_gap = True
            continue
        block = SampleBlock("strap", "ecg", fs, T0 + s / fs, x[s : s + step], "uV", first_index=s, gap_before=after_gap)
        after_gap = False
        out.extend(pl.feed("p-a", block))
    return out


def rhythm_alarms(out: PipelineOutput, condition: str) -> Events:
    return [
        (r.event, r.alarm_id, r.time.timestamp() - T0)
        for r in out.records
        if isinstance(r, AlarmRecord) and r.condition == condition
    ]


def raised_then_cleared(events: Events) -> tuple[float, float]:
    assert [e for e, _, _ in events] == [AlarmEvent.RAISED, AlarmEvent.CLEARED], events
    assert events[0][1] == events[1][1]  # one alarm: its clear carries its id
    return events[0][2], events[1][2]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(29.5, 36.0), st.floats(0.1, 3.0))
def test_a_gap_during_fibrillation_neither_ends_nor_strands_its_alarm(gap_start: float, gap_s: float) -> None:
    """Before, the channel restarted after a gap with a monitor that knew nothing of the episode:
    the VF alarm (raised at ~29 s) never got its clear once the bigeminy came back."""
    x, fs = signal(VFL_429)
    raised, cleared = raised_then_cleared(
        rhythm_alarms(feed(pipeline(), x, fs, gap=(gap_start, gap_start + gap_s)), VENTRICULAR_FIBRILLATION)
    )
    assert 28 <= raised <= 30
    # Cleared by the organised rhythm after the gap: a refilled window and the clear steps later.
    assert gap_start + gap_s < cleared <= max(40.0, gap_start + gap_s) + 12.0


@pytest.mark.parametrize("every_s", [1.0, 3.0, 7.0])
def test_fibrillation_is_raised_through_a_link_that_loses_a_frame_every_few_seconds(every_s: float) -> None:
    """Before, every gap started the VF detector afresh (an empty window, no steps counted
    toward a raise): with a 100 ms block lost every 3 or 7 s, 426's 30 s of VF raised nothing.
    Now the rhythm monitor goes on across a short gap on a straight line (``EcgChannel._bridge``)."""
    x, fs = signal(VF_426)
    steady = rhythm_alarms(feed(pipeline(), x, fs), VENTRICULAR_FIBRILLATION)
    assert [e for e, _, _ in steady] == [AlarmEvent.RAISED]
    lossy = rhythm_alarms(feed(pipeline(), x, fs, lose_every_s=every_s), VENTRICULAR_FIBRILLATION)
    assert [e for e, _, _ in lossy] == [AlarmEvent.RAISED]
    # The steps whose window holds a line score lower: at one block in ten lost, 4 s later.
    assert 30.0 <= lossy[0][2] <= steady[0][2] + 5.0


def test_a_standstill_is_raised_through_a_link_that_loses_a_frame_every_two_seconds() -> None:
    """Before, the monitor made anew at each gap had no last QRS to count the standstill from,
    and the P and T waves are no QRS: with a block lost every 2 s, asystole was never raised."""
    x, fs, last, first_back = standstill()
    raised, cleared = raised_then_cleared(rhythm_alarms(feed(pipeline(), x, fs, lose_every_s=2.0), ASYSTOLE))
    assert 6.0 <= raised - last <= 10.0
    assert cleared > first_back


def test_the_line_across_lost_frames_raises_no_rhythm_alarm() -> None:
    # MIT-BIH 119's first 40 s (sinus rhythm and bigeminy) with a block lost every second: the
    # straight lines are no VF, no QRS missing long enough for asystole, and no VT run.
    x, fs, _, _ = standstill()
    out = feed(pipeline(), x, fs, stop_s=40.0, lose_every_s=1.0)
    assert not [r for r in out.records if isinstance(r, AlarmRecord) and r.condition in RHYTHM_CONDITIONS]


RHYTHM_CONDITIONS = frozenset({VENTRICULAR_FIBRILLATION, ASYSTOLE, "ventricular_tachycardia"})


def across_restart(
    x: np.ndarray, fs: float, restart_s: float, condition: str, stop_s: float | None = None
) -> tuple[Events, Events, Pipeline]:
    """Feed up to ``restart_s``, restart (the snapshot a crash leaves, restored into a new pipeline)
    and feed on: ``condition``'s alarms before and after, and the pipeline after."""
    before = pipeline()
    raised = rhythm_alarms(feed(before, x, fs, stop_s=restart_s), condition)
    blob = before.snapshot("p-a")
    assert blob is not None
    after = pipeline()
    assert after.restore("p-a", blob)
    return raised, rhythm_alarms(feed(after, x, fs, start_s=restart_s, stop_s=stop_s), condition), after


def one_alarm_cleared(raised: Events, cleared: Events) -> float:
    """Raised once before the restart, cleared once after under the same id: the clear's time."""
    assert [e for e, _, _ in raised] == [AlarmEvent.RAISED]
    assert [(e, i) for e, i, _ in cleared] == [(AlarmEvent.CLEARED, raised[0][1])]
    return cleared[0][2]


def test_fibrillation_raised_before_a_restart_is_cleared_by_the_signal_after_it() -> None:
    x, fs = signal(VFL_429)
    raised, cleared, _ = across_restart(x, fs, 31.0, VENTRICULAR_FIBRILLATION)
    assert 31 < one_alarm_cleared(raised, cleared) <= 45


def test_fibrillation_still_on_after_a_restart_stays_raised() -> None:
    x, fs = signal("ecg_vf/vfdb_426_615s")  # sinus, then VF from 30 s to the end (60 s)
    raised, after_restart, after = across_restart(x, fs, 45.0, VENTRICULAR_FIBRILLATION)
    assert [e for e, _, _ in raised] == [AlarmEvent.RAISED]
    assert after_restart == []  # no clear, no second raise
    assert after.active_alarm_count() >= 1


def test_tachycardia_raised_before_a_restart_gets_its_clear() -> None:
    x, fs = signal(VT_615)
    one_alarm_cleared(*across_restart(x, fs, 31.0, "ventricular_tachycardia")[:2])


def test_a_gap_during_asystole_keeps_it_on_until_the_rhythm_is_back() -> None:
    """The P and T waves after the gap are no QRS: the reference of the patient's QRS is kept
    across the gap (same rate), so they neither clear the alarm nor let it be raised again."""
    x, fs, last, first_back = standstill()
    raised, cleared = raised_then_cleared(rhythm_alarms(feed(pipeline(), x, fs, gap=(52.0, 53.0)), ASYSTOLE))
    assert 6.0 <= raised - last <= 10.0
    assert -0.01 <= cleared - rhythm_back(first_back) <= 0.5  # at that QRS (Unix-time rounding aside)


@pytest.mark.parametrize("restart_s", [50.0, 60.0, 66.0])
def test_asystole_raised_before_a_restart_is_cleared_when_the_rhythm_is_back(restart_s: float) -> None:
    """The new process takes over the patient's QRS reference and the R-peak detector's levels
    (``StandstillMemory``, in the saved state): before, its fresh detector learnt the P and T
    waves as the signal and one of them ended the alarm within 0.3 s of the restart."""
    x, fs, _, first_back = standstill()
    cleared = one_alarm_cleared(*across_restart(x, fs, restart_s, ASYSTOLE)[:2])
    assert -0.01 <= cleared - rhythm_back(first_back) <= 0.5  # at that QRS (Unix-time rounding aside)


def rhythm_back(first_back: float) -> float:
    """When the rhythm is back after a standstill: the ``clear_beats``-th QRS in a row."""
    return beats_back(first_back, RhythmSettings().clear_beats)[-1]


def test_a_standstill_memory_that_cannot_be_read_costs_only_the_reference() -> None:
    x, fs, _, _ = standstill()
    before = pipeline()
    feed(before, x, fs, stop_s=60.0)
    blob = before.snapshot("p-a")
    assert blob is not None
    state = json.loads(blob)
    assert len(state["standstill"]) == 1  # written while the episode is on
    feed(before, x, fs, start_s=60.0, stop_s=65.0)
    later = before.snapshot("p-a")
    assert later is not None and json.loads(later)["standstill"] == state["standstill"]  # fixed at the raise
    bad_items = (
        ["strap", "ecg", [250.0, [1.0], [1.0, 2.0]]],  # levels cut short
        ["strap", "ecg", [float("nan"), [], [1, 1, 1, 1, 1]]],
        7,
    )
    for bad in bad_items:
        state["standstill"] = [bad]
        after = pipeline()
        assert after.restore("p-a", json.dumps(state).encode())  # the alarms are restored all the same
        assert after.active_alarm_count() >= 1


def test_a_resumed_vf_episode_ends_after_the_clear_steps_or_at_a_flat_window() -> None:
    fs = 250.0
    p = VfParams()
    det = VfDetector(fs)
    det.resume(0)
    quiet = np.zeros(round((p.window_s + (p.clear_steps + 1) * p.hop_s) * fs))
    changes = det.feed(quiet).changes
    assert [c.active for c in changes] == [False]
    assert not det.active
    flat = RhythmMonitor(fs)
    flat.resume(vf=True, asystole=False)
    assert flat.vf_active
    assert flat.vf.suppress(0)[0].active is False


def test_resumed_asystole_is_not_cleared_by_a_weak_beat() -> None:
    mon = RhythmMonitor(250.0)
    mon.resume(vf=False, asystole=True, qrs_reference=[1.0] * 8)
    assert mon.beat(100, 0.1) == []  # a P wave's energy: not a QRS
    qrs = [mon.beat(300 + 200 * k, 0.9) for k in range(RhythmSettings().clear_beats)]
    assert qrs[:-1] == [[]] * (len(qrs) - 1)
    assert [(c.condition, c.active) for c in qrs[-1]] == [(ASYSTOLE, False)]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.3, 8.0), min_size=1, max_size=40))
def test_asystole_ends_only_when_a_rhythm_is_back(rr_s: list[float]) -> None:
    """An agonal rhythm (vfdb 427 after its VF: a wide complex every 2 to 7 s) ended the alarm
    at each complex and raised it again at the next pause, 15 times in 5 minutes.  Now it ends at
    the ``clear_beats``-th QRS in a row, each within ``clear_rr_s`` of the one before."""
    fs, s = 250.0, RhythmSettings()
    mon = RhythmMonitor(fs)
    mon.resume(vf=False, asystole=True, qrs_reference=[1.0] * 8)
    index, run, want = 0, 0, None
    for k, rr in enumerate(rr_s):
        step = round(rr * fs)
        index += step
        run = run + 1 if k > 0 and step <= s.clear_rr_s * fs else 1
        got = mon.beat(index, 1.0)
        if want is None and run >= s.clear_beats:
            want = index
            assert [(c.condition, c.active, c.index) for c in got] == [(ASYSTOLE, False, index)]
        else:
            assert got == []
    assert mon.asystole is (want is None)


def test_no_valid_ecg_raised_before_a_restart_is_cleared_when_the_signal_is_good() -> None:
    """A new channel reports only changes and starts valid: before, the restored "no valid ECG"
    alarm of a noisy spell stayed raised for good once the signal was clean after the restart."""
    x, fs = signal("ecg/mitdb_119_0s")
    a, b = round(4 * fs), round(12 * fs)  # two noisy windows: the alarm is raised at 12 s
    x = x.copy()
    x[a:b] += 1000.0 * np.random.default_rng(1).standard_normal(b - a)  # 1 mV of white noise
    raised, cleared, after = across_restart(x, fs, 14.0, "no_valid_ecg", stop_s=40.0)
    one_alarm_cleared(raised, cleared)
    assert after.active_alarm_count() == 0


def spells(events: Events) -> list[tuple[float, float]]:
    """(raised, cleared) times of one condition's alarms, inf for one still raised at the end."""
    out, start = [], None
    for event, _, t in events:
        if event is AlarmEvent.RAISED:
            assert start is None, events  # never raised twice without a clear
            start = t
        else:
            assert start is not None, events
            out.append((start, t))
            start = None
    return out + ([(start, float("inf"))] if start is not None else [])


def union(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for s, e in sorted(a + b):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def two_leads(pl: Pipeline, leads: dict[str, np.ndarray], fs: float) -> PipelineOutput:
    """A multi-lead front-end: one block per frame and lead, the leads of a frame in turn."""
    out = PipelineOutput()
    step = round(0.1 * fs)
    n = min(len(x) for x in leads.values())
    for s in range(0, n, step):
        for channel, x in leads.items():
            block = SampleBlock("strap", channel, fs, T0 + s / fs, x[s : s + step], "uV", first_index=s)
            out.extend(pl.feed("p-a", block))
    return out


@pytest.mark.parametrize(
    ("condition", "lead_a", "lead_b"),
    [
        # VF on both leads, ending on the first (flutter 20-29 s) while the second is in VF from 30 s:
        # before, the first lead's clear at 39.8 s ended the alarm, and the second could not raise it again.
        (VENTRICULAR_FIBRILLATION, (VFL_429, None), ("ecg_vf/vfdb_426_615s", None)),
        # White noise on each lead, overlapping: "no valid ECG" until both recover.
        ("no_valid_ecg", ("ecg/mitdb_119_0s", (4.0, 14.0)), ("ecg/mitdb_119_0s", (10.0, 24.0))),
    ],
)
def test_a_device_alarm_is_on_while_any_of_its_leads_has_it(
    condition: str, lead_a: tuple[str, tuple[float, float] | None], lead_b: tuple[str, tuple[float, float] | None]
) -> None:
    leads = {}
    for channel, (rel, burst) in zip(("ecg", "ecg2"), (lead_a, lead_b), strict=True):
        x, fs = signal(rel)
        x = x[: round(60 * fs)].copy() if burst else x
        if burst:
            a, b = round(burst[0] * fs), round(burst[1] * fs)
            x[a:b] += 1000.0 * np.random.default_rng(1).standard_normal(b - a)
        leads[channel] = x
    alone = [spells(rhythm_alarms(two_leads(pipeline(), {c: x}, fs), condition)) for c, x in leads.items()]
    together = spells(rhythm_alarms(two_leads(pipeline(), leads, fs), condition))
    assert all(alone) and together == union(*alone), (alone, together)
