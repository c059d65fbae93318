"""The VF detector's early exit is exact: on real records, with the shipped model and with other
models and thresholds, every step's decision and every episode are those of scoring every feature,
and the feature bounds it relies on hold on every window."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import wfdb

from gateway.signal import vf_features
from gateway.signal.ecg_filters import SosFilter
from gateway.signal.vf_detector import (
    VfDetector,
    VfModel,
    VfParams,
    decimation,
    default_model,
    feature_sos,
    window_length,
)
from gateway.signal.vf_trees import from_nodes

FIXTURES = Path(__file__).parent.parent / "hil_fixtures"
RECORDS = [
    "ecg/mitdb_116_600s",
    "ecg/mitdb_119_0s",
    "ecg_tests/mitdb_104_120s",
    "ecg_tests/mitdb_203_600s",
    "ecg_tests/mitdb_228_0s",
    "ecg_vf/nstdb_119e00_300s",
    "ecg_vf/vfdb_426_615s",
    "ecg_vf/vfdb_429_1835s",
    "ecg_vf/vfdb_615_600s",
]


def load(rel: str) -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(FIXTURES / rel), channels=[0])
    return np.nan_to_num(rec.p_signal[:, 0]), float(rec.fs)


_SIGNALS = {rel: load(rel) for rel in RECORDS}


def _windows(x: np.ndarray, fs: float) -> tuple[list[np.ndarray], float]:
    """Every step's window, as the detector scores it."""
    k = decimation(fs)
    fsd = fs / k
    n = window_length(fsd, VfParams())
    y = SosFilter.design(feature_sos(fs)).run(x)[::k]
    hop = round(fsd)
    return [y[c - n : c] for c in range(n, len(y) + 1, hop)], fsd


def _near_threshold_model(seed: int, threshold: float) -> VfModel:
    """Random weights of both signs (so the bounds are used from both ends), with the bias put where
    the steps of the fixtures cross the threshold often: the exit is tested where it is tight.  The
    first stage's features weigh most, as in the shipped model, so that the exit is sometimes taken."""
    rng = np.random.default_rng(seed)
    shipped = default_model()
    first = [name in vf_features.STAGES[0] for name in vf_features.FEATURE_NAMES]
    weights = rng.normal(size=len(shipped.weights)) * np.where(first, 3.0, 0.3)
    probe = VfModel(shipped.mean, shipped.scale, tuple(weights.tolist()), 0.0)
    x, fs = _SIGNALS["ecg_vf/vfdb_426_615s"]
    wins, fsd = _windows(x, fs)
    z = [math.log(1 / probe.score(vf_features.compute(w, fsd).as_array()) - 1) * -1 for w in wins[::3]]
    bias = math.log(threshold / (1 - threshold)) - float(np.median(z))
    return VfModel(shipped.mean, shipped.scale, tuple(weights.tolist()), bias)


# Trees that confirm every step: another model's exit is tested on its own decisions (the shipped
# trees, fitted beside the shipped model, would turn down most steps of a random one).
AGREE = from_nodes(50.0, [{"feature": [-1], "threshold": [0.0], "left": [0], "right": [0], "value": [0.0]}])


def _both(x: np.ndarray, fs: float, params: VfParams, model: VfModel | None) -> tuple:
    trees = None if model is None else AGREE
    early = VfDetector(fs, params, model, trees=trees)
    full = VfDetector(fs, params, model, trees=trees)
    full.check_every_step = True
    block = round(0.25 * fs)
    a, b = [], []
    changes_a, changes_b = [], []
    for i in range(0, len(x), block):
        oa, ob = early.feed(x[i : i + block]), full.feed(x[i : i + block])
        a += oa.steps
        b += ob.steps
        changes_a += oa.changes
        changes_b += ob.changes
    return a, b, changes_a, changes_b


def _check_same(early: list, full: list, changes_early: list, changes_full: list, threshold: float) -> int:
    assert [(s.end_index, s.vf_like, s.recent_peak_mv) for s in early] == [
        (s.end_index, s.vf_like, s.recent_peak_mv) for s in full
    ]
    assert changes_early == changes_full
    assert all(s.exact for s in full)
    skipped = 0
    for e, f in zip(early, full, strict=True):
        if e.exact:
            assert e.probability == f.probability  # bit for bit: the same features, the same dot product
        else:
            skipped += 1
            assert f.probability <= e.probability < threshold  # an upper bound, below the threshold
    return skipped


@pytest.mark.parametrize("rel", RECORDS)
def test_early_exit_decides_every_step_as_the_full_model(rel: str) -> None:
    x, fs = _SIGNALS[rel]
    early, full, ce, cf = _both(x, fs, VfParams(), None)
    skipped = _check_same(early, full, ce, cf, VfParams().threshold)
    organised_rhythm = not any(s.vf_like for s in full)
    if organised_rhythm:  # ordinary ECG is far below the threshold: the exit is taken at almost every step
        assert skipped >= 0.9 * len(full)


@pytest.mark.parametrize(("seed", "threshold"), [(1, 0.5), (2, 0.8), (3, 0.95), (4, 0.2)])
def test_early_exit_is_exact_for_other_models_and_thresholds(seed: int, threshold: float) -> None:
    # A retrained model or another operating point needs no change: the exit is derived from them.
    model = _near_threshold_model(seed, threshold)
    params = VfParams(threshold=threshold, raise_steps=2, raise_of=3, clear_steps=2)
    skipped = vf_like = total = 0
    for rel in ["ecg_vf/vfdb_426_615s", "ecg_vf/vfdb_429_1835s", "ecg_tests/mitdb_203_600s"]:
        x, fs = _SIGNALS[rel]
        early, full, ce, cf = _both(x, fs, params, model)
        skipped += _check_same(early, full, ce, cf, threshold)
        vf_like += sum(s.vf_like for s in full)
        total += len(full)
    assert 0 < skipped < total and 0 < vf_like < total  # both outcomes, and both kinds of step, were met


def test_features_stay_within_their_bounds_on_every_window() -> None:
    checked = 0
    for x, fs in _SIGNALS.values():
        wins, fsd = _windows(x, fs)
        lo, hi = vf_features.bounds(len(wins[0]), fsd)
        for w in wins:
            f = vf_features.compute(w, fsd).as_array()
            assert np.all((lo <= f) & (f <= hi)), (f, lo, hi)
            checked += 1
    # Windows that push the bounds: a pure sine, a sparse spike train, white noise, a step, a flat line.
    rng = np.random.default_rng(5)
    for fsd in (80.0, 83.3, 90.0, 125.0, 160.0):
        n = window_length(fsd, VfParams())
        t = np.arange(n) / fsd
        spikes = np.zeros(n)
        spikes[:: int(fsd)] = 1.0
        lo, hi = vf_features.bounds(n, fsd)
        for w in (np.sin(2 * np.pi * 7 * t), spikes, rng.normal(size=n), np.sign(t - t[n // 2]), np.zeros(n)):
            f = vf_features.compute(w, fsd).as_array()
            assert np.all((lo <= f) & (f <= hi)), (fsd, f, lo, hi)
            checked += 1
    assert checked > 900
    # The bounds are tight where they are the definition's: uniform noise fills nearly a box per point.
    n = window_length(90.0, VfParams())
    psr = vf_features.FEATURE_NAMES.index("psr")
    assert vf_features.compute(rng.uniform(size=n), 90.0).psr > 0.8 * vf_features.bounds(n, 90.0)[1][psr]


def test_staged_features_are_the_computed_features() -> None:
    x, fs = _SIGNALS["ecg_vf/vfdb_426_615s"]
    wins, fsd = _windows(x, fs)
    names = [name for stage in vf_features.STAGES for name in stage]
    assert sorted(names) == sorted(vf_features.FEATURE_NAMES)
    for w in wins[::10]:
        staged = dict(zip(names, [v for stage in vf_features.stages(w, fsd) for v in stage], strict=True))
        f = vf_features.compute(w, fsd)
        assert staged == {name: getattr(f, name) for name in names}


def test_a_loud_window_beyond_the_bounds_is_scored_in_full() -> None:
    # Above 1e50 mV RMS squares may overflow and the bounds are void: no early exit there.
    x, fs = _SIGNALS["ecg/mitdb_119_0s"]
    early, full, ce, cf = _both(x[: int(30 * fs)] * 1e52, fs, VfParams(), None)
    # (A step scored in full also carries the trees' confirmation; the exit asks for it only at
    # or above the threshold.)
    unconfirmed = [dataclasses.replace(s, confirmation=math.nan) for s in full]
    assert early == unconfirmed and ce == cf


def _reference(x: np.ndarray, fs: float) -> dict[str, float]:
    """The time-domain features written plainly (numpy's own sums), as they were before the sums
    became dot products."""
    x = x - x.mean()
    ax = np.abs(x)
    ratio = np.pi * ax.sum() / np.abs(np.diff(x)).sum()
    half = max(1, min(len(x) // 2, int(ratio + 0.5)))
    sub = int(fs)
    blocks = ax[: len(x) // sub * sub].reshape(-1, sub)
    local_max = blocks.max(axis=1)
    var = np.mean(x * x)
    return {
        "leakage": np.abs(x[half:] + x[:-half]).sum() / (ax[half:].sum() + ax[:-half].sum()),
        "mean_freq_hz": fs / (2.0 * ratio),
        "tcsc": np.mean(blocks > 0.2 * local_max[:, None]),
        "kurtosis": np.mean(x**4) / var**2,
        "log_amplitude": np.log10(np.sqrt(var)),
        "amplitude_cv": local_max.std() / local_max.mean(),
    }


def test_features_equal_their_plain_definitions() -> None:
    # The sums are dot products (cheaper than numpy reductions): equal to ~1e-15, not bit for bit.
    for rel in ["ecg_vf/vfdb_426_615s", "ecg_tests/mitdb_203_600s"]:
        x, fs = _SIGNALS[rel]
        wins, fsd = _windows(x, fs)
        for w in wins[::5]:
            f = vf_features.compute(w, fsd)
            ref = _reference(w, fsd)
            for name, value in ref.items():
                assert getattr(f, name) == pytest.approx(value, rel=1e-12, abs=1e-300), name
