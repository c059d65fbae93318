"""The rules that turn a quality window's verdict into what the channel does with it
(``gateway/signal/window_verdict.py``), called directly with worked examples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signal.ecg_quality import EcgQuality, QualityWindow
from gateway.signal.no_valid_ecg import Verdict
from gateway.signal.window_verdict import alike_share, early_beat, noise_peaks_high, refined, verdict

FS = 250.0
WINDOW = 1000  # 4 s


def complexes(beats: list[int], n: int = WINDOW, width: float = 0.04) -> np.ndarray:
    """A band with one biphasic complex (a Gaussian's derivative) at each beat."""
    t = np.arange(n) / FS
    x = np.zeros(n)
    for b in beats:
        u = (t - b / FS) / width
        x += -u * np.exp(-0.5 * u * u)
    return x


def window(quality: EcgQuality, slope_floor: float = 0.0, band: np.ndarray | None = None) -> QualityWindow:
    return QualityWindow(0, WINDOW, quality, kurtosis=3.0, ptp_mv=1.0, slope_floor=slope_floor, band=band)


def never() -> bool:
    raise AssertionError("asked although it decides nothing")


def never_share(band: np.ndarray) -> float:
    raise AssertionError("asked although it decides nothing")


class TestNoisePeaks:
    def test_no_peak_set_aside_is_never_noise(self) -> None:
        assert not noise_peaks_high(0, 0.0, 1.0, 0.4)

    def test_mean_peak_against_the_qrs_level(self) -> None:
        # Three peaks of mean energy 0.433 against a QRS level of 1: over 0.4 of it.
        assert noise_peaks_high(3, 1.3, 1.0, 0.4)
        # Mean 0.367: under.
        assert not noise_peaks_high(3, 1.1, 1.0, 0.4)

    def test_no_learnt_qrs_level_calls_nothing_noise(self) -> None:
        assert not noise_peaks_high(3, 5.0, 0.0, 0.4)


class TestEarlyBeat:
    def test_a_premature_beat_against_the_released_rhythm(self) -> None:
        # Median of 800 x 5, 800 and 400 is 800; 400 < 0.6 x 800.
        assert early_beat([800.0, 400.0], [800.0] * 5, 0.6)

    def test_a_shorter_but_not_early_beat(self) -> None:
        assert not early_beat([800.0, 600.0], [800.0] * 5, 0.6)

    def test_nothing_released_judges_the_window_by_its_own_rrs(self) -> None:
        # A rhythm that sped up during noise: the old reference (1000 ms) would call 500 early.
        assert not early_beat([500.0, 520.0, 480.0], [], 0.6)
        assert early_beat([500.0, 250.0, 500.0], [], 0.6)

    def test_a_window_without_rr_has_no_early_beat(self) -> None:
        assert not early_beat([], [800.0], 0.6)


class TestAlikeShare:
    beats = (100, 300, 500, 700, 900)

    def test_identical_complexes_are_all_alike(self) -> None:
        band = complexes(list(self.beats))
        assert alike_share(self.beats, band, 0, WINDOW, FS, 0.9, 3) == 1.0

    def test_only_complexes_whole_in_the_window_count(self) -> None:
        # 0.12 s before (30 samples) and 0.2 s after (50): beat 10 and beat 960 are cut off,
        # leaving 2 whole ones, under the 3 needed.
        band = complexes([10, 300, 600, 960])
        assert alike_share([10, 300, 600, 960], band, 0, WINDOW, FS, 0.9, 3) == 0.0
        assert alike_share([10, 300, 600, 960], band, 0, WINDOW, FS, 0.9, 2) == 1.0

    def test_a_beat_placed_off_its_complex_is_unlike_both_neighbours(self) -> None:
        band = complexes(list(self.beats))
        placed = [100, 300, 540, 700, 900]  # the middle beat 160 ms late
        assert alike_share(placed, band, 0, WINDOW, FS, 0.9, 3) == pytest.approx(4 / 5)

    def test_noise_makes_unalike_complexes(self) -> None:
        band = np.random.default_rng(1).normal(size=WINDOW)
        assert alike_share(self.beats, band, 0, WINDOW, FS, 0.9, 3) == 0.0

    def test_a_window_that_starts_later_in_the_stream(self) -> None:
        band = complexes(list(self.beats))
        shifted = [b + 5000 for b in self.beats]
        assert alike_share(shifted, band, 5000, 5000 + WINDOW, FS, 0.9, 3) == 1.0

    @settings(max_examples=40, deadline=None)
    @given(
        seed=st.integers(0, 2**16),
        scale=st.floats(1e-3, 1e3),
        beats=st.lists(st.integers(0, WINDOW - 1), min_size=0, max_size=12, unique=True),
    )
    def test_a_share_that_no_gain_changes(self, seed: int, scale: float, beats: list[int]) -> None:
        beats = sorted(beats)
        band = complexes(beats) + 0.3 * np.random.default_rng(seed).normal(size=WINDOW)
        share = alike_share(beats, band, 0, WINDOW, FS, 0.9, 3)
        assert 0.0 <= share <= 1.0
        assert alike_share(beats, scale * band, 0, WINDOW, FS, 0.9, 3) == pytest.approx(share)


class TestRefined:
    def test_a_good_window_with_noise_peaks_is_noisy(self) -> None:
        got = refined(window(EcgQuality.GOOD), noise_peaks=True, max_slope_floor=0.2, early=never, share=never_share)
        assert got == (EcgQuality.NOISY, False)

    def test_steep_throughout_with_an_early_beat_is_noisy(self) -> None:
        w = window(EcgQuality.GOOD, slope_floor=0.3)
        assert refined(w, noise_peaks=False, max_slope_floor=0.2, early=lambda: True, share=never_share) == (
            EcgQuality.NOISY,
            False,
        )
        # Steep but slow, no early beat (an agonal rhythm under amplifier fuzz): readable.
        assert refined(w, noise_peaks=False, max_slope_floor=0.2, early=lambda: False, share=never_share) == (
            EcgQuality.GOOD,
            False,
        )

    def test_early_beats_are_not_asked_of_a_window_that_is_not_steep(self) -> None:
        w = window(EcgQuality.GOOD, slope_floor=0.1)
        assert refined(w, noise_peaks=False, max_slope_floor=0.2, early=never, share=never_share) == (
            EcgQuality.GOOD,
            False,
        )

    @pytest.mark.parametrize(
        ("share", "expected"),
        [(1.0, (EcgQuality.GOOD, False)), (0.8, (EcgQuality.NOISY, True)), (0.4, (EcgQuality.NOISY, False))],
    )
    def test_low_kurtosis_with_alike_complexes(self, share: float, expected: tuple[EcgQuality, bool]) -> None:
        w = window(EcgQuality.NOISY, band=np.zeros(WINDOW))
        assert refined(w, noise_peaks=False, max_slope_floor=0.2, early=never, share=lambda _: share) == expected

    def test_likeness_is_not_asked_with_noise_peaks_or_without_the_band(self) -> None:
        with_band = window(EcgQuality.NOISY, band=np.zeros(WINDOW))
        got = refined(with_band, noise_peaks=True, max_slope_floor=0.2, early=never, share=never_share)
        assert got == (EcgQuality.NOISY, False)
        # No band: noisy for more than its kurtosis (an amplitude jump).
        got = refined(window(EcgQuality.NOISY), noise_peaks=False, max_slope_floor=0.2, early=never, share=never_share)
        assert got == (EcgQuality.NOISY, False)

    @pytest.mark.parametrize("quality", [EcgQuality.FLAT, EcgQuality.SATURATED])
    def test_no_signal_stays_no_signal(self, quality: EcgQuality) -> None:
        got = refined(window(quality), noise_peaks=True, max_slope_floor=0.2, early=never, share=never_share)
        assert got == (quality, False)


class TestVerdict:
    def test_good(self) -> None:
        assert verdict(EcgQuality.GOOD, smooth_rhythm=False, vt_active=True, standstill_band=True) is Verdict.GOOD

    def test_noisy_counts_unless_a_rhythm_explains_it(self) -> None:
        assert verdict(EcgQuality.NOISY, smooth_rhythm=False, vt_active=False, standstill_band=False) is Verdict.NOISY
        for explained in (
            {"smooth_rhythm": True, "vt_active": False, "standstill_band": False},
            {"smooth_rhythm": False, "vt_active": True, "standstill_band": False},
            {"smooth_rhythm": False, "vt_active": False, "standstill_band": True},
        ):
            assert verdict(EcgQuality.NOISY, **explained) is Verdict.NEITHER

    @pytest.mark.parametrize("quality", [EcgQuality.FLAT, EcgQuality.SATURATED])
    def test_no_signal_is_never_explained_away(self, quality: EcgQuality) -> None:
        assert verdict(quality, smooth_rhythm=True, vt_active=True, standstill_band=True) is Verdict.NO_SIGNAL
