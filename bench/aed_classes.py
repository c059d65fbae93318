"""The rhythm classes by which defibrillator rhythm analysis is specified, for scoring our alarms.

``bench/ecg_vf.py``'s ``Sp_second`` counts every alarmed second outside annotated VF/flutter as
false, annotated ventricular tachycardia included.  The convention of the field is different: the
American Heart Association's recommendations for specifying and reporting AED arrhythmia analysis
(Kerber et al., Circulation 1997;95:1677-1682), which AED makers report against in their manuals,
sort rhythms into classes with their own goals:

* shockable: coarse VF (peak-to-peak of at least 200 uV), sensitivity > 90 %; rapid VT (the rate
  is set by the maker), sensitivity > 75 %;
* intermediate: fine VF and other VT, reported only;
* non-shockable: normal sinus rhythm, specificity > 99 %; other rhythms (atrial fibrillation,
  SVT, sinus bradycardia, heart blocks, idioventricular rhythms, PVCs), > 95 %; asystole, > 95 %.

A second is put in a class from the rhythm annotated there (the last rhythm note at or before its
start) and, for VF and VT, from the signal: VF's peak-to-peak over the 4 s around the second
(band-passed 1-30 Hz, zero phase), VT's rate from the autocorrelation peak (lags 0.15-1.5 s) of
the 8 s around it (``native_rhythm.dominant_rate``, as the ECG channel measures it).  Annotated
noise is no AHA class: it is printed apart.  Pure functions here; ``ecg_vf.py`` runs the channel
and prints the table.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.signal.native_rhythm import dominant_rate  # the rate the ECG channel measures too

FloatArray = npt.NDArray[np.float64]

COARSE_VF_MV = 0.2  # AHA 1997: coarse VF is at least 200 uV peak-to-peak
RAPID_VT_PER_MIN = 180.0  # the AHA leaves it to the maker; ours, and a command-line option
VF_NOTES = frozenset({"(VF", "(VFIB", "(VFL"})
NSR_NOTES = frozenset({"(N", "(NSR"})


@dataclass(frozen=True)
class RhythmClass:
    name: str
    shockable: bool | None  # None: intermediate, reported only
    goal_pct: float | None  # sensitivity goal (shockable) or specificity goal (non-shockable)


CLASSES = (
    RhythmClass("coarse VF", True, 90.0),
    RhythmClass("rapid VT", True, 75.0),
    RhythmClass("fine VF", None, None),
    RhythmClass("other VT", None, None),
    RhythmClass("NSR", False, 99.0),
    RhythmClass("other rhythms", False, 95.0),
    RhythmClass("asystole", False, 95.0),
    RhythmClass("noise", False, None),
)
NON_SHOCKABLE = frozenset(c.name for c in CLASSES if c.shockable is False)


def per_second_ptp(y: FloatArray, fs: float, span_s: float = 4.0) -> FloatArray:
    """Peak-to-peak of ``y`` over the ``span_s`` centred on each whole second."""
    sec = round(fs)
    m = len(y) // sec
    half = round(span_s * fs / 2)
    out = np.empty(m)
    for k in range(m):
        c = k * sec + sec // 2
        w = y[max(0, c - half) : c + half]
        out[k] = float(np.ptp(w)) if len(w) else 0.0
    return out


def classify_seconds(
    notes: list[tuple[int, str]],
    y: FloatArray,
    fs: float,
    rapid_vt_per_min: float = RAPID_VT_PER_MIN,
) -> list[str]:
    """The AHA class of each whole second of band-passed ECG ``y`` (samples at ``fs``), from the
    rhythm ``notes`` as (sample, note); a second before the first note is normal sinus rhythm
    (MIT-BIH records begin in it when they do not say)."""
    sec = round(fs)
    m = len(y) // sec
    starts = [i for i, _ in notes]
    ptp: FloatArray | None = None
    out: list[str] = []
    for k in range(m):
        j = bisect.bisect_right(starts, k * sec) - 1
        note = notes[j][1] if j >= 0 else "(N"
        if note in VF_NOTES:
            if ptp is None:
                ptp = per_second_ptp(y, fs)
            out.append("coarse VF" if ptp[k] >= COARSE_VF_MV else "fine VF")
        elif note == "(VT":
            c = k * sec + sec // 2
            rate = dominant_rate(y[max(0, c - 4 * sec) : c + 4 * sec], fs)
            out.append("rapid VT" if rate >= rapid_vt_per_min else "other VT")
        elif note in NSR_NOTES:
            out.append("NSR")
        elif note == "(ASYS":
            out.append("asystole")
        elif note == "(NOISE":
            out.append("noise")
        else:
            out.append("other rhythms")
    return out


def table(counts: dict[tuple[str, str], int], label: str) -> list[str]:
    """Lines of the class table from ``counts[(class, 's' | 'vf' | 'lethal')]``: seconds scored,
    seconds with the VF alarm on, seconds with the VF or the VT alarm on."""
    lines = [
        f"{label}: AED rhythm classes (AHA 1997), per second; Se or Sp for the VF alarm, then for VF or VT:",
        f"{'class':>15} {'seconds':>8} {'VF alarm':>9} {'VF or VT':>9}  goal",
    ]
    for c in CLASSES:
        n = counts.get((c.name, "s"), 0)
        if not n:
            continue
        vf, lethal = counts.get((c.name, "vf"), 0), counts.get((c.name, "lethal"), 0)
        if c.shockable is False:  # a specificity: seconds without the alarm
            vf, lethal = n - vf, n - lethal
        kind = "Se" if c.shockable is not False else "Sp"
        goal = f"{kind} > {c.goal_pct:g} %" if c.goal_pct is not None else f"{kind}, reported only"
        lines.append(f"{c.name:>15} {n:>8} {100.0 * vf / n:8.2f}% {100.0 * lethal / n:8.2f}%  {goal}")
    return lines
