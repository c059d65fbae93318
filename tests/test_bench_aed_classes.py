"""bench/aed_classes.py: the AHA AED rhythm classes each second is scored in, on signals of known
amplitude and rate."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bench_modules import load_bench

aed = load_bench("aed_classes")
FS = 250.0


def sine(seconds: float, hz: float, ptp_mv: float) -> np.ndarray:
    t = np.arange(round(seconds * FS)) / FS
    return 0.5 * ptp_mv * np.sin(2 * np.pi * hz * t)


@pytest.mark.parametrize(("hz", "per_min"), [(5.0, 300.0), (3.0, 180.0), (2.0, 120.0), (1.0, 60.0)])
def test_dominant_rate_of_a_sine_is_its_frequency(hz: float, per_min: float) -> None:
    # The lag is a whole number of samples: 250 Hz puts 5 Hz's period (50 samples) exactly on one.
    assert aed.dominant_rate(sine(8.0, hz, 1.0), FS) == pytest.approx(per_min, rel=0.01)


def test_a_window_shorter_than_the_longest_lag_has_no_rate() -> None:
    assert np.isnan(aed.dominant_rate(sine(1.0, 2.0, 1.0), FS))


def test_each_note_gives_its_class_and_vf_and_vt_are_split_by_the_signal() -> None:
    # 10 s segments: coarse VF (0.5 mV), fine VF (0.1 mV), VT at 240 /min, VT at 150 /min, then
    # sinus, asystole, atrial fibrillation, noise.
    y = np.concatenate(
        [
            sine(10, 5.0, 0.5),
            sine(10, 5.0, 0.1),
            sine(10, 4.0, 1.0),
            sine(10, 2.5, 1.0),
            sine(40, 1.0, 1.0),
        ]
    )
    s = round(FS)
    notes = [
        (0, "(VF"),
        (10 * s, "(VFL"),
        (20 * s, "(VT"),
        (30 * s, "(VT"),
        (40 * s, "(N"),
        (50 * s, "(ASYS"),
        (60 * s, "(AFIB"),
        (70 * s, "(NOISE"),
    ]
    classes = aed.classify_seconds(notes, y, FS)
    assert len(classes) == 80
    # Seconds 2-7 of each segment: the measuring windows (4 s for VF, 8 s for VT) lie inside it.
    assert set(classes[2:8]) == {"coarse VF"}
    assert set(classes[12:18]) == {"fine VF"}
    assert set(classes[24:26]) == {"rapid VT"}
    assert set(classes[34:36]) == {"other VT"}
    assert set(classes[40:50]) == {"NSR"}
    assert set(classes[50:60]) == {"asystole"}
    assert set(classes[60:70]) == {"other rhythms"}
    assert set(classes[70:80]) == {"noise"}
    # A lower rapid-VT rate makes the 150 /min run rapid too.
    assert set(aed.classify_seconds(notes, y, FS, rapid_vt_per_min=140.0)[34:36]) == {"rapid VT"}


def test_seconds_before_the_first_note_are_sinus_rhythm() -> None:
    assert aed.classify_seconds([(5 * 250, "(VT")], sine(5, 1.0, 1.0), FS) == ["NSR"] * 5


def test_the_table_gives_sensitivity_where_shockable_and_specificity_where_not() -> None:
    counts = {
        ("coarse VF", "s"): 200,
        ("coarse VF", "vf"): 150,
        ("coarse VF", "lethal"): 190,
        ("NSR", "s"): 1000,
        ("NSR", "vf"): 5,
        ("NSR", "lethal"): 20,
    }
    lines = aed.table(counts, "clean")
    assert lines[2].split() == ["coarse", "VF", "200", "75.00%", "95.00%", "Se", ">", "90", "%"]
    assert lines[3].split() == ["NSR", "1000", "99.50%", "98.00%", "Sp", ">", "99", "%"]
    assert len(lines) == 4  # classes without seconds are left out
