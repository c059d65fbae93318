"""The patient's own QRS through a rhythmic artefact (``gateway.signal.native_rhythm``): its pieces
on worked examples, its answers whatever the packing, and the alarms a tremor no longer raises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.records import SampleBlock
from gateway.signal import native_rhythm
from gateway.signal.ecg_channel import EcgChannel
from gateway.signal.native_rhythm import NativeRhythm
from tests.bench_modules import load_bench

FIXTURES = Path(__file__).parent.parent / "hil_fixtures"
ecg_artefact = load_bench("ecg_artefact")


def record(rel: str) -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(FIXTURES / rel), channels=[0])
    return np.nan_to_num(np.asarray(rec.p_signal[:, 0], dtype=np.float64)), float(rec.fs)


def with_tremor(hz: float, rel: float = 1.0, start_s: float = 20.0, end_s: float = 45.0) -> tuple[np.ndarray, float]:
    """MIT-BIH 119 (sinus rhythm with ventricular bigeminy) with the bench's rhythmic artefact of
    ``rel`` times its typical peak-to-peak from ``start_s`` to ``end_s``."""
    x, fs = record("ecg/mitdb_119_0s")
    sec = round(fs)
    m = len(x) // sec
    size = rel * float(np.median(np.ptp(x[: m * sec].reshape(m, sec), axis=1)))
    a, b = round(start_s * fs), round(end_s * fs)
    x[a:b] += ecg_artefact.artefact(b - a, fs, hz, size, 0)
    return x, fs


def answers(x: np.ndarray, fs: float, sizes: list[int]) -> list[bool]:
    """``through_artefact`` at every whole second, asked as soon as its samples are in."""
    native = NativeRhythm(fs)
    got: list[bool] = []
    pos, k, sec = 0, 1, round(fs)
    for size in sizes:
        piece = x[pos : pos + size]
        native.feed(piece)
        pos += len(piece)
        while k * sec <= pos:
            got.append(native.through_artefact(k * sec))
            k += 1
    return got


def test_peaks_keep_the_tallest_of_close_maxima() -> None:
    x = np.array([0, 5, 0, 6, 0, 0, 0, 4, 0, 1, 0, 0], dtype=float)
    assert native_rhythm.peaks(x, 3.0, 3) == [3, 7]  # 1 is 2 from 3 (taller); 9 is under 3
    assert native_rhythm.peaks(x, 3.0, 2) == [1, 3, 7]
    assert native_rhythm.peaks(x, 0.0, 2) == []  # no height, no peaks (a flat band)


@given(st.lists(st.floats(0, 100), min_size=1, max_size=300), st.sampled_from([0.5, 0.9, 0.995]))
def test_upper_is_the_lower_quantile(values: list[float], q: float) -> None:
    x = np.asarray(values)
    assert native_rhythm.upper(x, q) == np.percentile(x, 100 * q, method="lower")


@pytest.mark.parametrize(("hz", "per_min"), [(5.0, 300.0), (2.0, 120.0)])
def test_dominant_rate_of_a_sine(hz: float, per_min: float) -> None:
    t = np.arange(5 * 250) / 250.0
    assert native_rhythm.dominant_rate(np.sin(2 * np.pi * hz * t), 250.0) == pytest.approx(per_min, rel=0.01)


def test_no_answer_without_the_samples() -> None:
    x, fs = with_tremor(5.0)
    native = NativeRhythm(fs)
    native.feed(x[: round(30 * fs)])
    assert not native.through_artefact(round(31 * fs))  # not fed yet
    assert not native.through_artefact(round(5 * fs))  # fewer than 8 s before it
    assert not native.through_artefact(round(10 * fs))  # no longer in the ring


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=40), first=st.integers(0, 5000), span=st.integers(1, 400)
)
def test_samples_are_what_was_fed_at_those_indices_across_the_ring(sizes: list[int], first: int, span: int) -> None:
    # The VT detector reads raw complexes here by sample index (``NativeRhythm.samples``).
    native = NativeRhythm(250.0, first_index=1000)
    fed = np.arange(1000.0, 1000.0 + sum(sizes))  # sample i holds the value i
    at = 0
    for n in sizes:
        native.feed(fed[at : at + n])
        at += n
    lo, hi = 1000 + first, 1000 + first + span
    got = native.samples(lo, hi)
    size = len(native._ring)
    held = max(1000, 1000 + len(fed) - size)
    if lo >= held and hi <= 1000 + len(fed):
        assert got is not None and np.array_equal(got, np.arange(float(lo), float(hi)))
        got[:] = -1.0  # a copy: the ring is untouched
        assert np.array_equal(native.samples(lo, hi), np.arange(float(lo), float(hi)))
    else:
        assert got is None  # not fed yet, or overwritten
    assert native.samples(lo, lo) is None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 900), min_size=1, max_size=60))
def test_answers_do_not_depend_on_the_packing(sizes: list[int]) -> None:
    x, fs = with_tremor(5.0, end_s=40.0)
    x = x[: round(50 * fs)]
    whole = answers(x, fs, [round(fs)] * 51)  # second by second
    reps = (len(x) // sum(sizes)) + 1
    assert answers(x, fs, (sizes * reps)) == whole
    assert any(whole[25:40]) and not any(whole[:20])  # found in the tremor; not in the sinus rhythm


def test_a_native_rhythm_is_found_through_a_tremor_and_not_in_fibrillation() -> None:
    x, fs = with_tremor(5.0)
    got = answers(x, fs, [round(0.1 * fs)] * round(len(x) / (0.1 * fs) + 1))
    assert sum(got[25:45]) >= 4
    vf, vfs = record("ecg_vf/vfdb_426_615s")  # sinus, then VF from 30 s to the end (60 s)
    assert not any(answers(vf, vfs, [round(0.1 * vfs)] * 601)[33:])


def rhythm_alarms(x: np.ndarray, fs: float) -> list[tuple[float, str]]:
    channel, step, got = EcgChannel("strap"), round(0.1 * fs), []
    for a in range(0, len(x), step):
        out = channel.feed(SampleBlock("strap", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a))
        got += [(round(e.time, 1), e.condition) for e in out.rhythm if e.active]
    return got


@pytest.mark.parametrize("hz", [5.0, 6.0])
def test_a_tremor_over_sinus_rhythm_raises_no_lethal_rhythm_alarm(hz: float) -> None:
    """25 s of 5-6 Hz artefact as large as 119's beats: a VT alarm within 3.5 s before (23.4 and
    22.9 s), none now; the burst is reported as "no valid ECG" instead (its beats held back)."""
    x, fs = with_tremor(hz)
    assert rhythm_alarms(x, fs) == []


def test_pacing_spikes_through_fibrillation_are_no_native_rhythm() -> None:
    """A pacemaker that does not sense VF goes on pacing through it: regular spikes at its own
    rate, which the 15-45 Hz band finds as well as any QRS.  Spikes of 0.5 mV, two samples wide, at
    70 /min through 426's VF made it an "artefact" (no VF alarm) until the band's beats were
    checked for spikes; the VF alarm comes within a second of when it comes without them."""
    x, fs = record("ecg_vf/vfdb_426_615s")
    clean = rhythm_alarms(x, fs)
    for t in np.arange(0.3, len(x) / fs, 60.0 / 70.0):
        i = round(t * fs)
        x[i : i + 2] += 0.5
    assert clean == [(38.8, "ventricular_fibrillation")]
    ((t, condition),) = rhythm_alarms(x, fs)
    assert condition == "ventricular_fibrillation" and 38.8 <= t <= 39.8
    assert native_rhythm.pacing_spikes(x[: round(5 * fs)], [round(t * fs) for t in (0.3, 1.157, 2.014)], fs, 0.75)


def test_rate_with_dropouts_allows_hidden_beats_only_at_whole_multiples() -> None:
    s = native_rhythm.NativeRhythmSettings()
    fs = 250.0
    assert native_rhythm.rate_with_dropouts([0, 250, 500, 1000, 1250], fs, s, 250.0) == 60.0  # one hidden at 750
    assert native_rhythm.rate_with_dropouts([0, 250, 500, 1000, 1125], fs, s, 250.0) is None  # 0.5 s: not 1 s apart
    assert native_rhythm.rate_with_dropouts([0, 250, 1250], fs, s, 250.0) is None  # three: too few to tell
    assert native_rhythm.rate_with_dropouts([0, 100, 200, 300], fs, s, 100.0) is None  # over 1.2 s of the 5: a cluster
    assert native_rhythm.rate_with_dropouts([0, 250, 500, 750, 1750], fs, s, 250.0) is None  # three hidden in a row
    assert native_rhythm.rate_with_dropouts([0, 250, 500, 750], fs, s, 250.0) == 60.0
    assert native_rhythm.rate_with_dropouts([0, 250, 500, 750], fs, s, 180.0) is None  # not the patient's RR


def test_matched_beats_are_the_complexes_like_the_template_not_the_artefacts_peaks() -> None:
    fs, s = 250.0, native_rhythm.NativeRhythmSettings()
    half = round(s.match_half_s * fs)
    k = np.arange(-half, half + 1)

    def g(c: float) -> np.ndarray:
        return np.exp(-0.5 * ((k - c) / 1.5) ** 2)

    template = g(0) - 0.4 * g(-4) - 0.5 * g(4) + 0.2 * g(8)  # a QRS in the 15-45 Hz band: narrow, triphasic
    n = round(5 * fs)
    hf = 0.4 * np.sin(2 * np.pi * 16.0 * np.arange(n) / fs)  # an artefact's harmonic in the band
    at = [100, 350, 600, 850, 1100]
    for i in at:
        hf[i - half : i + half + 1] += template
    got = native_rhythm.matched_beats(hf, np.abs(hf), template, fs, s)
    assert len(got) == len(at) and all(abs(g - a) <= 2 for g, a in zip(got, at, strict=True))
    assert native_rhythm.matched_beats(hf, np.abs(hf), np.sin(k), fs, s) == []  # nothing like it


def test_the_patients_qrs_is_learnt_from_the_beats_the_channel_released() -> None:
    x, fs = record("ecg/mitdb_119_0s")
    channel = EcgChannel("strap")
    step = round(0.1 * fs)
    for a in range(0, round(30 * fs), step):
        channel.feed(SampleBlock("strap", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a))
    template = channel.native.template
    half = round(channel.native.settings.match_half_s * fs)
    assert template is not None and len(template) == 2 * half + 1
    assert template[half] == template.max() > 0  # its peak in the middle, turned positive


def test_a_tremor_twice_the_beats_size_is_told_by_the_patients_own_qrs(monkeypatch: pytest.MonkeyPatch) -> None:
    """4 Hz at twice 119's peak-to-peak: the band's peaks are not all the QRS (no regular rhythm
    among them), but those like the patient's complex are, with a beat or two hidden.  Without the
    template a VT alarm came at 37.4 s."""
    x, fs = with_tremor(4.0, 2.0)
    assert rhythm_alarms(x, fs) == []
    monkeypatch.setattr(NativeRhythm, "learn", lambda self, beats: None)
    assert [c for _, c in rhythm_alarms(x, fs)] == ["ventricular_tachycardia"]
