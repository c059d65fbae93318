"""The synthetic standstill of bench/ecg_asystole.py: what its cut leaves of a paced complex, and
whether a lethal-rhythm alarm was on when an asystole alarm cleared early.

MIT-BIH 102 and 104 pace with complexes that last about 170 ms after their annotation; the fixed
80 ms cut left their second half, which the ECG channel counts as beats.  ``--paced-after-ms``
cuts paced beats further, and only those."""

from __future__ import annotations

import numpy as np

from tests.bench_modules import load_bench

bench = load_bench("ecg_asystole")
FS = 360.0


def complex_at(n: int, r: int, width_s: float) -> np.ndarray:
    """A flat line with a unit bump from ``r`` to ``r + width_s`` (a wide complex's body)."""
    x = np.zeros(n)
    x[r : r + round(width_s * FS)] = 1.0
    return x


def test_the_default_cut_leaves_the_second_half_of_a_wide_paced_complex() -> None:
    x = complex_at(1000, 500, 0.17)  # samples 500-560
    y = bench.cut_qrs(x, FS, np.array([500]), frozenset({500}), 0, 0.08)
    assert y[:478].tolist() == x[:478].tolist()  # the line starts 60 ms (21.6 samples) before
    # ... and ends 80 ms (28.8 samples) after, on the complex: its last 32 samples are left.
    assert y[529:].tolist() == x[529:].tolist()
    assert np.count_nonzero(y[529:]) == 32


def test_paced_after_cuts_a_paced_complex_to_its_end_and_a_narrow_beat_as_before() -> None:
    x = complex_at(2000, 500, 0.17) + complex_at(2000, 1500, 0.17)
    # 1500 is paced (record index 1600 with the excerpt starting at 100); 500 is not.
    y = bench.cut_qrs(x, FS, np.array([500, 1500]), frozenset({1600}), 100, 0.18)
    assert np.count_nonzero(y[1400:]) == 0  # the paced complex is gone
    assert np.count_nonzero(y[529:600]) == 32  # the other keeps its tail
    assert y[:478].tolist() == x[:478].tolist()


def test_on_at_reads_an_alarm_state_at_a_time() -> None:
    changes = [(75.0, True), (81.0, False), (90.0, True)]
    assert not bench.on_at(changes, 74.9)
    assert bench.on_at(changes, 75.0)  # raised in the same step as the asystole clear
    assert bench.on_at(changes, 80.9)
    assert not bench.on_at(changes, 81.0)
    assert bench.on_at(changes, 1e9)
    assert not bench.on_at([], 10.0)


def test_t_waves_are_cut_to_an_upper_normal_qt_but_the_next_p_wave_stays() -> None:
    n = round(6 * FS)
    for rr_s, after_s in ((0.8, 0.42 * 0.8**0.5 + 0.04), (0.5, 0.25)):  # QT 0.416 s; at 120 /min the P wave's limit
        qrs = np.arange(round(1 * FS), round(5 * FS), round(rr_s * FS))
        x = np.sin(np.arange(n) * 0.37)  # nothing straight
        y = bench.cut_qrs(x, FS, qrs, frozenset(), 0, 0.08, t_waves=True)
        r = int(qrs[1])
        end = int(r + after_s * FS)
        assert y[r + 1 : end].tolist() != x[r + 1 : end].tolist()
        assert y[end : int(qrs[2] - 0.06 * FS)].tolist() == x[end : int(qrs[2] - 0.06 * FS)].tolist()
        assert np.allclose(np.diff(y[int(r - 0.06 * FS) : end], 2), 0.0)  # one straight line
    plain = bench.cut_qrs(x, FS, qrs, frozenset(), 0, 0.08)
    assert plain[int(qrs[1] + 0.081 * FS) :][:10].tolist() == x[int(qrs[1] + 0.081 * FS) :][:10].tolist()
