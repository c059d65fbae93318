"""What a judged quality window means for the beats in it and for "no valid ECG".

The quality index (``ecg_quality``) judges a window by its samples alone; the channel knows more
(the R-peak detector's set-aside peaks, the beats and their RRs, the rhythm on), and these rules
use it.  Plain functions of what the channel hands them, so that tests call them directly:

* A good window is still noisy when the R-peak detector set aside peaks nearly as big as its QRS
  within it (``noise_peaks_high``), or when it is steep throughout for a second (its slope floor,
  ``ecg_quality``) and holds a beat that came too early to be the patient's (``early_beat``):
  noise the detector took for beats.  A steep but slow rhythm with no early beat (an agonal
  rhythm under amplifier fuzz) is left readable.
* A window noisy for its low kurtosis alone is readable when the complexes at its beats are alike
  one another (``alike_share``): a smooth, wide, regular rhythm is sub-Gaussian like a sinusoid
  (vfdb 418), while noise, even band-limited to a wide complex's frequencies, makes unalike
  "complexes", and so does mains hum once it is large beside the complexes (its phase differs at
  each beat).  When most of them are alike but not all, it is a smooth rhythm with a beat not to
  be trusted: readings are held back as after a noisy window, and it counts neither way toward
  "no valid ECG".
* VT's wide, smooth complexes and a standstill (no QRS spike left to lift the kurtosis) read as
  noise for their kurtosis alone: such a window counts neither way too (``verdict``).
"""

from __future__ import annotations

from itertools import pairwise
from statistics import median
from typing import TYPE_CHECKING

import numpy as np

from gateway.signal.ecg_quality import EcgQuality, QualityWindow
from gateway.signal.no_valid_ecg import Verdict
from gateway.signal.vt_detector import correlation

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

_sum = np.add.reduce


def noise_peaks_high(count: int, energy: float, signal_level: float, max_ratio: float) -> bool:
    """Whether the ``count`` peaks the detector set aside as noise since the last window (their
    summed ``energy``) were, on average, over ``max_ratio`` of its QRS level.  Its own noise
    level, a slow average that moves only when a peak is set aside, stays where a burst of noise
    left it on a clean record with no such peaks (a paced rhythm), and held windows "noisy" long
    after the noise."""
    return count > 0 and signal_level > 0 and energy > count * max_ratio * signal_level


def early_beat(window_rrs: Sequence[float], released_rrs: Sequence[float], short_rr_ratio: float) -> bool:
    """Whether a beat of the window came after an RR (ms) under ``short_rr_ratio`` of the
    rhythm's: the median of the RRs released since the signal was last invalid and the window's
    own.  The window's own alone when nothing was released since: a reference kept across a
    spell of noise could call every beat of a rhythm that changed meanwhile early, and the window
    would never be good to renew it."""
    if not window_rrs:
        return False
    return min(window_rrs) < short_rr_ratio * median((*released_rrs, *window_rrs))


def alike_share(
    beats: Iterable[int], band: FloatArray, start: int, end: int, fs: float, alike_corr: float, alike_beats: int
) -> float:
    """The share of the complexes whole in the window (``band``: its band-passed samples, from
    index ``start`` to ``end``) that are alike the one before it or the one after it: from 0.12 s
    before the beat to 0.2 s after it (a wide complex), they correlate at ``alike_corr`` or more;
    0 with fewer than ``alike_beats``.  Noise makes "complexes" unlike one another; a beat the
    detector placed off the complexes makes one unlike both neighbours."""
    pre, post = round(0.12 * fs), round(0.20 * fs)
    lo, hi = start + pre, end - post
    segments = []
    for i in beats:
        if lo <= i <= hi:
            segment = band[i - pre - start : i + post - start]
            segments.append(segment - _sum(segment) / len(segment))
    if len(segments) < alike_beats:
        return 0.0
    alike = [correlation(a, b) >= alike_corr for a, b in pairwise(segments)]
    # Complex k's neighbours are pairs k - 1 and k: each complex needs one of them alike.
    liked = sum(before or after for before, after in zip([False, *alike], [*alike, False], strict=True))
    return liked / len(segments)


def refined(
    window: QualityWindow,
    *,
    noise_peaks: bool,
    max_slope_floor: float,
    early: Callable[[], bool],
    share: Callable[[FloatArray], float],
) -> tuple[EcgQuality, bool]:
    """The window's quality with what the channel knows (module docstring), and whether it is a
    smooth rhythm with a beat not to be trusted.  ``early`` and ``share`` are asked only when
    they decide: ``early_beat`` and ``alike_share`` of the window."""
    quality = window.quality
    if quality is EcgQuality.GOOD:
        if noise_peaks or (window.slope_floor > max_slope_floor and early()):
            return EcgQuality.NOISY, False
    elif quality is EcgQuality.NOISY and window.band is not None and not noise_peaks:
        # A smooth rhythm (low kurtosis) whose complexes are alike one another.  Its slope floor
        # is a noise's (~0.25 on vfdb 418's wide complexes) and its beats are not checked for
        # early ones: their likeness is the direct test that they are no noise.
        alike = share(window.band)
        if alike == 1.0:
            return EcgQuality.GOOD, False
        return quality, alike > 0.5
    return quality, False


def verdict(quality: EcgQuality, *, smooth_rhythm: bool, vt_active: bool, standstill_band: bool) -> Verdict:
    """What the window (its ``refined`` quality) counts as toward "no valid ECG" (``no_valid_ecg``).

    A noisy window counts neither way during VT (its wide, smooth complexes read as noise in
    nearly every window of an episode: a "no valid ECG" beside the VT alarm would say the VT is
    an artefact), nor during a standstill when it is noisy for its kurtosis alone
    (``standstill_band``: asystole on and the window carries its band); a jump in amplitude
    (electrode motion) still counts as noise then.  Nor a smooth rhythm's window with a beat not
    to be trusted."""
    if quality is EcgQuality.GOOD:
        return Verdict.GOOD
    if quality is EcgQuality.NOISY:
        return Verdict.NEITHER if smooth_rhythm or vt_active or standstill_band else Verdict.NOISY
    return Verdict.NO_SIGNAL
