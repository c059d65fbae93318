"""The ECG channel's deferred processing (samples queued until the next quality window or VF step
end) changes when beats come out, and nothing else: validity, released readings and rhythm
events come out in the very block they come out in when every block is processed at once."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import wfdb

from gateway.config.processing import AlarmSection
from gateway.pipeline import PatientSetup, Pipeline, PipelineOutput
from gateway.records import AlarmRecord, EvidenceRecord, SampleBlock
from gateway.signal.ecg_channel import EcgChannel
from gateway.signal.ecg_output import EcgOutput
from gateway.signal.ecg_rhythm import RhythmMonitor, RhythmSettings
from gateway.signal.vf_detector import VfOutput
from tests.synthetic_ecg import beats_back

FIXTURES = Path(__file__).parent.parent / "hil_fixtures"
T0 = 1_780_000_000.0


def record(name: str, seconds: float) -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(FIXTURES / name), channels=[0])
    fs = float(rec.fs)
    return np.nan_to_num(rec.p_signal[: int(seconds * fs), 0]), fs


def decisions(o: EcgOutput) -> tuple[list[object], list[float]]:
    """What was decided, and when (times apart: they are compared to float precision)."""
    what: list[object] = [(c.valid, c.detail) for c in o.changes]
    what += [(r.vital, r.value) for r in o.readings]
    what += [(e.condition, e.active) for e in o.rhythm]
    times = [c.time for c in o.changes] + [r.time for r in o.readings]
    times += [t for e in o.rhythm for t in (e.time, e.onset_time)]
    return what, times


@pytest.mark.parametrize(
    ("name", "seconds", "step"),
    [
        ("ecg/mitdb_119_0s", 120.0, 36),
        ("ecg_vf/vfdb_426_615s", 60.0, 25),
        ("ecg_vf/vfdb_615_600s", 60.0, 7),
        ("ecg_vf/vfdb_418_1900s", 40.0, 13),  # a smooth rhythm read for its alike complexes
    ],
)
def test_deferred_channel_decides_in_the_same_blocks_as_one_processing_every_block(
    name: str, seconds: float, step: int
) -> None:
    x, fs = record(name, seconds)
    x[int(20 * fs) : int(23 * fs)] = 0.0  # a flat stretch: validity changes too
    deferred, direct = EcgChannel("strap"), EcgChannel("strap")
    beats_deferred: list[int] = []
    beats_direct: list[int] = []
    n_decisions = 0
    for start in range(0, len(x), step):
        block = SampleBlock("strap", "ecg", fs, T0 + start / fs, x[start : start + step], "mV", first_index=start)
        a, b = deferred.feed(block), direct.feed(block, defer=False)
        (what, times), (want, want_times) = decisions(a), decisions(b)
        assert what == want, start
        assert times == pytest.approx(want_times, abs=1e-6), start
        n_decisions += len(what)
        beats_deferred += a.beats
        beats_direct += b.beats
        # Beats are late by at most the distance between decision points (1 s); a beat is
        # decided up to 0.3 s after its R wave.
        assert beats_deferred == beats_direct[: len(beats_deferred)]
        assert all(i > (start + step) - 1.35 * fs for i in beats_direct[len(beats_deferred) :])
    assert n_decisions > 20
    assert len(beats_direct) - len(beats_deferred) <= 2


def test_asystole_clears_at_the_block_of_the_returning_beat() -> None:
    """Deferral stops while an asystole is on: the beat that ends it is not held back."""
    x, fs = record("ecg/mitdb_119_0s", 60.0)
    ann = wfdb.rdann(str(FIXTURES / "ecg" / "mitdb_119_0s"), "atr").sample
    fifth_back = beats_back(40.0, RhythmSettings().clear_beats)[-1] * fs
    for r in ann:
        lo, hi = int(r - 0.06 * fs), int(r + 0.08 * fs)
        if 20 * fs < r < 40 * fs:
            x[lo:hi] = np.linspace(x[lo], x[hi], hi - lo)  # QRS cut out, P and T waves left
    deferred, direct = EcgChannel("strap"), EcgChannel("strap")
    step = round(0.1 * fs)
    cleared = []
    for start in range(0, len(x), step):
        block = SampleBlock("strap", "ecg", fs, T0 + start / fs, x[start : start + step], "mV", first_index=start)
        a, b = deferred.feed(block), direct.feed(block, defer=False)
        (what, times), (want, want_times) = decisions(a), decisions(b)
        assert what == want and times == pytest.approx(want_times, abs=1e-6)
        cleared += [start for e in a.rhythm if e.condition == "asystole" and not e.active]
        if deferred.rhythm.asystole:
            assert a.beats == b.beats
    # At the QRS that makes the rhythm back (the fifth in a row), in the block it arrives in.
    assert any(fifth_back <= c <= fifth_back + 0.5 * fs for c in cleared), (cleared, fifth_back)


def test_ecg_strip_marks_every_beat_the_channel_found_in_it() -> None:
    x, fs = record("ecg_vf/vfdb_426_615s", 60.0)
    x *= 1000.0  # uV, as a strap sends
    counter = itertools.count(1)
    setup = PatientSetup("p-a", AlarmSection().limits, {"strap": "replay"})
    pl = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup})
    direct = EcgChannel("strap")
    out = PipelineOutput()
    beats: list[int] = []
    step = round(0.1 * fs)
    for start in range(0, len(x), step):
        block = SampleBlock("strap", "ecg", fs, T0 + start / fs, x[start : start + step], "uV", first_index=start)
        out.extend(pl.feed("p-a", block))
        beats += direct.feed(block, defer=False).beats
    # The VF alarm's strip.  VF's first windows, smooth but with complexes mostly alike, count
    # neither way toward "no valid ECG": none is raised as VF begins (one was, read as noise).
    strips = [r for r in out.records if isinstance(r, EvidenceRecord)]
    assert sorted(s.condition for s in strips) == ["ventricular_fibrillation"]
    for strip in strips:
        assert any(isinstance(r, AlarmRecord) and r.alarm_id == strip.alarm_id for r in out.records)
        first = round((strip.start_time.timestamp() - T0) * fs)
        # The strip is cut by the block that completes it: the beats decided by then, all of them.
        end = next(i + step for i in range(0, len(x), step) if i + step >= first + strip.n_samples)
        want = [b - first for b in beats if first <= b < first + strip.n_samples]
        decided_by_end = [b for b in want if b + first < end - round(0.25 * fs)]
        assert decided_by_end and set(decided_by_end) <= set(strip.beats) <= set(want)


@pytest.mark.parametrize("fs", [100.0, 128.0, 250.0, 360.0, 500.0, 1000.0])
def test_next_step_end_is_where_the_vf_detector_steps(fs: float) -> None:
    """The channel defers up to ``next_step_end``: it must be exactly where the VF detector's
    next step (and asystole check) is decided, at every sample rate."""
    monitor = RhythmMonitor(fs, first_index=1234)
    steps: list[int] = []
    feed = monitor.vf.feed

    def spy(
        samples: np.ndarray,
        organised: Callable[[int], bool] | None = None,
        artefact: Callable[[int], bool] | None = None,
    ) -> VfOutput:
        result = feed(samples, organised, artefact)
        steps.extend(s.end_index for s in result.steps)
        return result

    monitor.vf.feed = spy  # type: ignore[method-assign,assignment]
    x = np.random.default_rng(1).normal(0.0, 0.3, int(15 * fs))
    ends: list[int] = []
    pos = 1234
    while monitor.next_step_end() - 1234 <= len(x):
        end = monitor.next_step_end()
        assert end > pos
        before = len(steps)
        monitor.feed(x[pos - 1234 : end - 1 - 1234])  # up to the step's last sample: no step yet
        assert len(steps) == before
        monitor.feed(x[end - 1 - 1234 : end - 1234])
        ends.append(end)
        pos = end
    # A step at every such end once the detector's first window is full, and nowhere else.
    assert len(steps) >= 10 and steps == ends[len(ends) - len(steps) :]
