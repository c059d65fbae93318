"""The "no valid ECG" technical alarm's delay and hysteresis, window verdict by window verdict,
and its settings in the config (a wrong value's error: ``tests/test_config.py``)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import given
from hypothesis import strategies as st

from gateway.config.processing import AlarmSection, EcgAlarmSection, NoValidEcg
from gateway.ecg_alarms import no_valid_ecg_windows
from gateway.pipeline import PatientSetup, Pipeline, PipelineOutput
from gateway.records import AlarmEvent, AlarmRecord, SampleBlock
from gateway.signal.ecg_channel import EcgChannel, EcgSettings
from gateway.signal.no_valid_ecg import NoValidEcgAlarm, Verdict

G, N, X, V = Verdict.GOOD, Verdict.NOISY, Verdict.NO_SIGNAL, Verdict.NEITHER
verdicts = st.lists(st.sampled_from([G, N, X, V]), max_size=200)


def run(seq: list[Verdict], alarm: NoValidEcgAlarm | None = None) -> list[tuple[int, bool]]:
    a = alarm or NoValidEcgAlarm()
    return [(i, r) for i, v in enumerate(seq) if (r := a.window(v)) is not None]


def test_worked_examples() -> None:
    assert run([G, N, G, G, N, G]) == []  # isolated noisy windows: beats held, no alarm
    assert run([G, N, G, N]) == [(3, True)]  # two of the last three
    assert run([G, N, N, G, G, G, G]) == [(2, True), (6, False)]  # cleared by the fourth good window
    assert run([G, X]) == [(1, True)]  # a lead off: at once
    # Bursts every 5 windows, two noisy each: one alarm for the whole stretch, not one per burst.
    assert run([N, N, G, G, G] * 6 + [G]) == [(1, True), (30, False)]
    # A window that is neither (noise read during VT) adds to no raise and breaks a good run.
    assert run([G, N, V, V, N]) == []
    assert run([N, N, G, G, V, G, G, G, G]) == [(1, True), (8, False)]


@given(verdicts)
def test_raises_and_clears_alternate_and_each_has_its_cause(seq: list[Verdict]) -> None:
    changes = run(seq)
    assert [r for _, r in changes] == [k % 2 == 0 for k in range(len(changes))]
    for i, raised in changes:
        if raised:
            recent = seq[max(0, i - 2) : i + 1]
            assert seq[i] is X or (seq[i] is N and recent.count(N) >= 2)
        else:
            assert seq[i - 3 : i + 1] == [G] * 4


@given(verdicts)
def test_a_single_noisy_window_among_good_ones_never_raises(seq: list[Verdict]) -> None:
    # No two noisy windows within three, no flat one: nothing to raise.
    spaced = [v for v in seq if v is not X]
    for i in range(len(spaced)):
        if spaced[i] is N and N in spaced[i + 1 : i + 3]:
            spaced[i] = G
    assert run(spaced) == []


@given(verdicts, verdicts)
def test_end_clears_at_once_and_forgets_the_noise(before: list[Verdict], after: list[Verdict]) -> None:
    a = NoValidEcgAlarm()
    run(before, a)
    was = a.raised
    assert a.end() is was and not a.raised
    # One noisy window after the end is not "two of the last three" with noise from before it.
    assert a.window(N) is None


def test_restart_keeps_the_state_and_nothing_else() -> None:
    a = NoValidEcgAlarm()
    run([G, N], a)
    a.restart(raised=True)
    assert run([G, G, G, G], a) == [(3, False)]
    a.restart(raised=False)
    assert a.window(N) is None


def run_held(seq: list[tuple[Verdict, bool]], alarm: NoValidEcgAlarm | None = None) -> list[tuple[int, bool]]:
    a = alarm or NoValidEcgAlarm()
    return [(i, r) for i, (v, h) in enumerate(seq) if (r := a.window(v, held=h)) is not None]


def test_readings_held_back_long_enough_raise_it_by_themselves() -> None:
    # Good, neither and one noisy window in turn: no raise by the noise rules, the rate held all along.
    seq = [(G, True), (V, True), (N, True), (G, True)]
    assert run([v for v, _ in seq]) == []
    assert run_held(seq) == [(2, True)]  # the third window with the readings held
    # Raised on a noisy window, but for the readings held back: one noisy window raises nothing by
    # itself, so the channel says "unreadable" with the hold's onset, not "noisy" from this window.
    a = NoValidEcgAlarm()
    assert run_held(seq, a) == [(2, True)] and a.for_held
    a = NoValidEcgAlarm()
    assert run_held([(N, True), (N, True)], a) == [(1, True)] and not a.for_held
    # Not on a good window, which may be the first of the two that release the readings.
    assert run_held(seq, NoValidEcgAlarm(held_windows=4)) == []
    assert run_held([*seq, (V, True)], NoValidEcgAlarm(held_windows=4)) == [(4, True)]
    assert run_held([(V, True), (V, True), (G, True), (G, False)]) == []
    assert run_held(seq, NoValidEcgAlarm(held_windows=0)) == []  # off
    # Readings released in between: counted afresh.
    assert run_held([(G, True), (G, True), (G, False), (V, True), (V, True)]) == []
    # Cleared as from noise: four good windows in a row (the readings are back after two).
    assert run_held([(V, True)] * 3 + [(G, True), (G, False), (G, False), (G, False)]) == [(2, True), (6, False)]


def test_end_restart_and_a_lead_off_forget_the_readings_held() -> None:
    a = NoValidEcgAlarm()
    run_held([(V, True), (V, True)], a)
    a.end()  # VF or VT began: the rhythm says why
    assert a.window(V, held=True) is None
    run_held([(V, True)], a)
    a.restart(raised=False)
    assert a.window(V, held=True) is None
    run_held([(V, True)], a)
    a.explained()  # the device reported its lead off
    assert run_held([(V, True), (V, True)], a) == []
    assert a.window(V, held=True) is True


@given(st.lists(st.tuples(st.sampled_from([G, N, X, V]), st.booleans()), max_size=200))
def test_every_raise_has_its_cause_with_readings_held_too(seq: list[tuple[Verdict, bool]]) -> None:
    a = NoValidEcgAlarm()
    changes, for_held = [], []
    for i, (v, h) in enumerate(seq):
        if (r := a.window(v, held=h)) is not None:
            changes.append((i, r))
            for_held.append(a.for_held)
    assert [r for _, r in changes] == [k % 2 == 0 for k in range(len(changes))]
    verdict = [v for v, _ in seq]
    for (i, raised), held in zip(changes, for_held, strict=True):
        if raised:
            noise = verdict[i] is X or (verdict[i] is N and verdict[max(0, i - 2) : i + 1].count(N) >= 2)
            assert held is not noise  # the noise rules first: "unreadable" only where they said nothing
            assert noise or (i >= 2 and all(h for _, h in seq[i - 2 : i + 1]) and verdict[i] is not G)
        else:
            assert verdict[i - 3 : i + 1] == [G] * 4


@pytest.mark.parametrize(("bad", "of", "clear"), [(0, 3, 4), (4, 3, 4), (2, 3, 0)])
def test_impossible_settings_are_refused(bad: int, of: int, clear: int) -> None:
    with pytest.raises(ValueError, match="bad_windows"):
        NoValidEcgAlarm(bad, of, clear)


@pytest.mark.parametrize(
    ("raise_s", "clear_s", "windows"),
    [(8, 16, (2, 3, 4)), (4, 4, (1, 2, 1)), (5, 13, (2, 3, 4)), (12, 20, (3, 4, 5))],
)
def test_config_seconds_become_whole_quality_windows(
    raise_s: float, clear_s: float, windows: tuple[int, int, int]
) -> None:
    got = no_valid_ecg_windows(NoValidEcg(raise_after_s=raise_s, clear_after_s=clear_s))
    assert (got["alarm_bad_windows"], got["alarm_of_windows"], got["alarm_clear_windows"]) == windows
    assert no_valid_ecg_windows(NoValidEcg()) == {
        "alarm_bad_windows": EcgSettings().alarm_bad_windows,
        "alarm_of_windows": EcgSettings().alarm_of_windows,
        "alarm_clear_windows": EcgSettings().alarm_clear_windows,
        "alarm_held_windows": EcgSettings().alarm_held_windows,
    }  # the config's defaults are the channel's


@pytest.mark.parametrize(("held_s", "windows"), [(12, 3), (13, 4), (4, 1), (0, 0)])
def test_unreadable_seconds_become_whole_quality_windows(held_s: float, windows: int) -> None:
    assert no_valid_ecg_windows(NoValidEcg(unreadable_after_s=held_s))["alarm_held_windows"] == windows


def test_a_technician_who_wants_it_at_once_gets_it_for_one_noisy_window() -> None:
    """``raise_after_s: 4`` through the pipeline: 3 s of noise inside one window raises it,
    where the default (8 s) does not."""
    rec = wfdb.rdrecord(str(Path(__file__).parent.parent / "hil_fixtures" / "ecg" / "mitdb_119_0s"), channels=[0])
    fs = float(rec.fs)
    x = rec.p_signal[: round(40 * fs), 0] * 1000.0
    a, b = round(12.5 * fs), round(15.5 * fs)
    x[a:b] += np.random.default_rng(2).normal(0, 2000.0, b - a)  # 2 mV RMS: a noisy window

    def raised(section: EcgAlarmSection) -> list[float]:
        setup = PatientSetup("p-a", AlarmSection().limits, {"strap": "replay"})
        counter = itertools.count()
        pl = Pipeline(gateway_id="gw", new_key=lambda: f"k{next(counter)}", patients={"p-a": setup}, ecg_alarms=section)
        step = round(0.1 * fs)
        out = PipelineOutput()
        for s in range(0, len(x), step):
            out.extend(pl.feed("p-a", SampleBlock("strap", "ecg", fs, s / fs, x[s : s + step], "uV", first_index=s)))
        return [
            r.time.timestamp()
            for r in out.records
            if isinstance(r, AlarmRecord) and r.condition == "no_valid_ecg" and r.event is AlarmEvent.RAISED
        ]

    assert raised(EcgAlarmSection()) == []
    assert raised(EcgAlarmSection(no_valid_ecg=NoValidEcg(raise_after_s=4))) == [pytest.approx(16.0)]


def test_a_flutter_no_rule_calls_is_not_left_blank() -> None:
    """vfdb 609 (``hil_fixtures/ecg_vf``): atrial fibrillation, then from 51.1 s a polymorphic
    ventricular flutter at ~200 /min that neither the VF nor the VT rule calls for 17 s.  Its
    quality windows alternate good, noisy and neither, so the heart rate stops at ~43 s, and by the
    noise rules alone nothing said why until 68 s.  Held back for 3 windows, the readings raise
    "no valid ECG" (``unreadable``) within 13 s of the last rate."""
    rec = wfdb.rdrecord(str(Path(__file__).parent.parent / "hil_fixtures" / "ecg_vf" / "vfdb_609_970s"), channels=[0])
    fs, x = float(rec.fs), rec.p_signal[:, 0]

    def stream(settings: EcgSettings) -> tuple[float, list[tuple[float, str]]]:
        """The last heart rate released before the flutter's end, and the raises."""
        channel = EcgChannel("strap", settings)
        step = round(0.1 * fs)
        rates, raises = [0.0], []
        for a in range(0, len(x), step):
            out = channel.feed(SampleBlock("strap", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a))
            rates += [r.time for r in out.readings if r.vital.name == "HEART_RATE" and r.time < 72.6]
            raises += [(c.time, c.detail) for c in out.changes if not c.valid]
        return max(rates), raises

    last_rate, raises = stream(EcgSettings())
    assert 40 < last_rate < 51.1  # the rate is held back before the flutter's annotated onset
    assert raises and raises[0][1] == "unreadable"
    assert last_rate < raises[0][0] <= last_rate + 13.0
    # The same stream by the noise rules alone: blank for 25 s.
    last_rate, raises = stream(EcgSettings(alarm_held_windows=0))
    assert raises and raises[0][0] - last_rate > 20.0
