"""Streaming VF/flutter detector on real excerpts: onset found in seconds, quiet on sinus rhythm,
VT and electrode-motion noise, identical output for any block split, model file checked on load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from gateway.signal import vf_features
from gateway.signal.vf_detector import (
    MODEL_PATH,
    VfChange,
    VfDetector,
    VfOutput,
    VfParams,
    batch_features,
    load_model,
    window_length,
)
from gateway.signal.vf_features import PSR_GRID

FIXTURES = Path(__file__).parent.parent / "hil_fixtures"


def load(rel: str) -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(FIXTURES / rel), channels=[0])
    return np.nan_to_num(rec.p_signal[:, 0]), float(rec.fs)


def stream(x: np.ndarray, fs: float, sizes: list[int] | None = None, *, full: bool = False) -> VfOutput:
    det = VfDetector(fs)
    det.check_every_step = full  # every step scored in full: exact probabilities
    out = VfOutput()
    pos, i = 0, 0
    block = round(0.1 * fs)
    while pos < len(x):
        n = sizes[i % len(sizes)] if sizes else block
        o = det.feed(x[pos : pos + n])
        out.steps += o.steps
        out.changes += o.changes
        pos += n
        i += 1
    return out


def starts(out: VfOutput) -> list[VfChange]:
    return [c for c in out.changes if c.active]


def test_fibrillation_onset_alarmed_within_ten_seconds() -> None:
    x, fs = load("ecg_vf/vfdb_426_615s")  # sinus rhythm, VF from 30 s
    out = stream(x, fs)
    s = starts(out)
    assert len(s) == 1
    delay = (s[0].index - 30 * fs) / fs
    assert 0 < delay <= 10, delay
    # Once VF is under way, every second scores VF-like (no gaps the hysteresis has to bridge)...
    late = [s.vf_like for s in out.steps if s.end_index > 35 * fs]
    assert len(late) > 20 and all(late)
    # ...and none of the sinus seconds did.
    assert not any(s.vf_like for s in out.steps if s.end_index < 30 * fs)


def test_flutter_alarmed_then_cleared_after_sustained_organised_rhythm() -> None:
    x, fs = load("ecg_vf/vfdb_429_1835s")  # bigeminy, flutter from 20 s to 29 s, bigeminy again
    changes = stream(x, fs).changes
    assert [c.active for c in changes] == [True, False]
    on, off = changes
    assert 20 * fs < on.index <= 30 * fs
    assert on.onset_index <= on.index and off.onset_index == on.onset_index
    # Cleared only after ``clear_steps`` (8) VF-free seconds, not at the first organised one.
    assert 29 * fs + 8 * fs <= off.index <= 45 * fs


@pytest.mark.parametrize(
    "rel",
    [
        "ecg_tests/mitdb_203_600s",  # multiform PVCs, atrial flutter/fibrillation, noise
        "ecg_tests/mitdb_228_0s",
        "ecg_tests/mitdb_104_120s",  # paced
        "ecg/mitdb_119_0s",
        "ecg_vf/nstdb_119e00_300s",  # electrode-motion noise at 0 dB: technical, never VF
        "ecg_vf/vfdb_615_600s",  # a 17 s run of VT: not VF
    ],
)
def test_no_episode_outside_fibrillation(rel: str) -> None:
    x, fs = load(rel)
    assert starts(stream(x, fs)) == []


def test_flat_and_tiny_signals_are_never_fibrillation() -> None:
    fs = 250.0
    t = np.arange(int(30 * fs)) / fs
    out = stream(np.zeros_like(t), fs)
    assert out.steps and not any(s.vf_like for s in out.steps)
    vf, vf_fs = load("ecg_vf/vfdb_426_615s")
    vf = vf[int(40 * vf_fs) :]  # fibrillation throughout
    assert any(s.vf_like for s in stream(vf, vf_fs).steps)
    tiny = vf * (0.02 / np.sqrt(np.mean(vf**2)))  # the same fibrillation at 20 uV RMS: below the floor
    assert not any(s.vf_like for s in stream(tiny, vf_fs).steps)


_VF_EXCERPT = load("ecg_vf/vfdb_426_615s")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20))
def test_any_block_split_gives_the_same_steps_and_episodes(sizes: list[int]) -> None:
    x, fs = _VF_EXCERPT
    x = x[int(20 * fs) : int(50 * fs)]
    whole = VfDetector(fs).feed(x)
    split = stream(x, fs, sizes)
    assert split.steps == whole.steps
    assert split.changes == whole.changes
    assert starts(whole)  # the excerpt does contain an onset: the comparison covers one


def test_streaming_matches_the_batch_features_used_for_training() -> None:
    x, fs = _VF_EXCERPT
    out = stream(x, fs, full=True)
    ends, feats = batch_features(x, fs)
    model = load_model()
    floor = np.log10(VfParams().min_amplitude_mv)
    assert [s.end_index for s in out.steps] == ends.tolist()
    expected = [model.score(f) if f[7] >= floor else 0.0 for f in feats]
    assert vf_features.FEATURE_NAMES[7] == "log_amplitude"
    assert [s.probability for s in out.steps] == pytest.approx(expected, abs=1e-12)
    assert max(expected) > 0.9 and min(expected) < 0.1


@pytest.mark.parametrize("rel", ["ecg_vf/vfdb_418_1900s", "ecg_vf/vfdb_429_1835s", "ecg_vf/vfdb_426_615s"])
def test_the_phase_space_share_does_not_depend_on_the_sample_rate(rel: str) -> None:
    # The boxes a curve visits grow with the points drawn on it: the same ECG at a device's rate
    # must fill the same share as at the rate the model learnt (83 Hz, from vfdb's 250 Hz).
    # Drawn at each rate's own points, these read 26-38 % more at 130 Hz (a Polar strap) and
    # 10-17 % more at 200 Hz (features at 100 Hz): enough to raise false VF alarms.
    x, fs = load(rel)
    psr = vf_features.FEATURE_NAMES.index("psr")
    ref = float(np.median(batch_features(x, fs)[1][:, psr]))
    for rate, up, down in ((130.0, 13, 25), (180.0, 18, 25), (200.0, 4, 5), (360.0, 36, 25)):
        y = resample_poly(x, up, down)
        got = float(np.median(batch_features(y, rate)[1][:, psr]))
        assert got == pytest.approx(ref, rel=0.06), rate


def test_at_the_phase_space_rate_the_curve_is_the_samples() -> None:
    fs = vf_features.PSR_RATE_HZ
    x = np.random.default_rng(5).normal(size=window_length(fs, VfParams()))
    p = vf_features._plan(len(x), fs)
    assert p.psr_at is None and p.delay == round(0.5 * fs)
    q = np.minimum(((x - x.min()) * (PSR_GRID / (x.max() - x.min()))).astype(int), PSR_GRID - 1)
    boxes = {(int(a), int(b)) for a, b in zip(q[p.delay :], q[: -p.delay], strict=True)}
    assert vf_features.compute(x, fs).psr == len(boxes) / PSR_GRID**2


def test_features_of_a_sine_and_of_a_spike_train() -> None:
    fs = 125.0
    t = np.arange(int(4 * fs)) / fs
    sine = vf_features.compute(np.sin(2 * np.pi * 5 * t), fs)
    assert sine.peak_freq_hz == pytest.approx(5.0, abs=0.3)
    assert sine.mean_freq_hz == pytest.approx(5.0, rel=0.1)
    assert sine.leakage < 0.2  # the VF filter is tuned to the sine: little passes
    assert sine.tcsc > 0.8
    assert sine.kurtosis == pytest.approx(1.5, abs=0.1)
    assert sine.acf_max > 0.5 and sine.acf_min < -0.5  # repeats every 0.2 s, opposite half a cycle on
    assert sine.harmonics < 0.1  # no energy at 10 and 15 Hz
    assert sine.psr < 0.05  # one closed curve in the phase plane
    noise = vf_features.compute(np.random.default_rng(3).normal(size=len(t)), fs)
    # At 125 Hz the curve is drawn at 83 Hz (vf_features.PSR_RATE_HZ): 290 points, 0.18 of the
    # grid at most; noise visits a box for most of them, the sine one closed curve.
    assert noise.psr > 4 * sine.psr and noise.acf_max < 0.3
    spikes = np.zeros_like(t)
    spikes[:: int(fs)] = 1.0  # one narrow 'QRS' a second
    train = vf_features.compute(spikes, fs)
    assert train.leakage > 0.8
    assert train.tcsc < 0.05
    assert train.kurtosis > 50
    assert train.harmonics > 1.5  # a spike train's harmonics are as strong as its fundamental
    assert train.acf_max == pytest.approx(0.75)  # repeats every second: 3 of its 4 spikes overlap at 1 s
    assert tuple(f.name for f in dataclasses.fields(train)) == vf_features.FEATURE_NAMES
    assert train.as_array().tolist() == [getattr(train, n) for n in vf_features.FEATURE_NAMES]
    with pytest.raises(ValueError, match="shorter than 2 s"):
        vf_features.compute(np.zeros(100), fs)


def test_model_file_that_does_not_fit_the_features_is_refused(tmp_path: Path) -> None:
    doc = json.loads(MODEL_PATH.read_text())
    assert doc["provenance"]["trainer"] == "scripts/train_vf_model.py"
    doc["features"] = doc["features"][:-1]
    bad = tmp_path / "model.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="differ"):
        load_model(bad)


@pytest.mark.parametrize("params", [VfParams(), VfParams(threshold=0.6, raise_steps=3, raise_of=4, clear_steps=3)])
def test_recorded_steps_replayed_through_decide_give_the_streaming_episodes(params: VfParams) -> None:
    # bench/vf_sweep.py records the steps once (default threshold) and replays other operating points.
    x, fs = load("ecg_vf/vfdb_429_1835s")
    recorder = VfDetector(fs)
    recorder.check_every_step = True  # as the sweep records: exact probabilities at every step
    recorded = recorder.feed(x).steps
    live = VfDetector(fs, params).feed(x)
    replayer = VfDetector(fs, params)
    replayed = [
        replayer.decide(s.end_index, s.probability >= params.threshold and s.confirmation >= params.confirm_threshold)
        for s in recorded
    ]
    assert [c for c in replayed if c is not None] == live.changes
    assert live.changes  # the excerpt has an episode to compare


def test_a_vetoed_step_is_recorded_as_organised_and_never_vf_like() -> None:
    x, fs = _VF_EXCERPT
    threshold = VfParams().threshold
    free = VfDetector(fs).feed(x).steps
    half = free[len(free) // 2].end_index
    asked: list[int] = []

    def organised(end: int) -> bool:  # an organised rhythm in the second half only
        asked.append(end)
        return end > half

    vetoed = VfDetector(fs).feed(x, organised).steps
    assert any(s.vf_like for s in free) and not any(s.organised for s in free)
    assert any(s.vf_like for s in free if s.end_index > half)  # the veto has VF-like steps to hold off
    # The veto is asked first, at every step; where it holds nothing is scored...
    assert asked == [s.end_index for s in vetoed]
    held = [s for s in vetoed if s.end_index > half]
    assert all(s.organised and not s.vf_like and not s.exact and np.isnan(s.probability) for s in held)
    # ...and elsewhere the steps are those of the detector without a veto.
    assert [s for s in vetoed if s.end_index <= half] == [s for s in free if s.end_index <= half]
    # Every step scored in full and its veto recorded (replaying other thresholds).
    det = VfDetector(fs)
    det.check_every_step = True
    every = det.feed(x, organised).steps
    assert all(s.exact for s in every) and [s.organised for s in every] == [s.end_index > half for s in every]
    confirm = VfParams().confirm_threshold
    assert [s.vf_like for s in every] == [
        s.probability >= threshold and s.confirmation >= confirm and not s.organised for s in every
    ]
    assert [s.vf_like for s in every] == [s.vf_like for s in vetoed]


def test_steps_whose_window_holds_a_bridged_gap_do_not_keep_vf_from_being_raised() -> None:
    # Six VF-like steps of the seven that raise an episode, then 8 s that end a bridged gap's
    # line (EcgChannel._bridge): flat, no step VF-like, yet none counts, and the next VF-like
    # step raises.  Counted, the flat steps push the six out of the last eight.
    fs = 250.0
    for bridged in (True, False):
        det = VfDetector(fs)
        for k in range(6):
            det.decide(k, True)
        if bridged:
            det.bridged(round(8 * fs))
        assert not det.feed(np.zeros(round(8 * fs))).changes
        change = det.decide(round(8 * fs), True)
        assert (change is not None and change.active) is bridged


def test_during_an_episode_steps_over_a_bridged_gap_count_toward_its_clear() -> None:
    fs = 250.0
    det = VfDetector(fs)
    det.resume(0)
    det.bridged(round(20 * fs))
    out = det.feed(np.zeros(round(20 * fs)))
    assert [c.active for c in out.changes] == [False]
