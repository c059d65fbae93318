"""Medians of the few values the beat-by-beat code keeps (RR intervals, QRS energies, complexes).

``statistics.median`` is generic (any iterable, any number type) and costs several times the
sort of eight numbers; this is the same arithmetic for a short sequence of ints or floats.
``median_rows`` is np.median's arithmetic on a sort: np.median itself imports numpy.ma (~1 MB
resident) into the daemon.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]


def median(values: Iterable[float]) -> float:
    """The median, with exactly ``statistics.median``'s result (the mean of the two middle
    values for an even count); raises ValueError when there are no values."""
    v = sorted(values)
    n = len(v)
    if not n:
        raise ValueError("median of no values")
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def median_rows(rows: Sequence[FloatArray]) -> FloatArray:
    """The sample-by-sample median of equally long arrays (the mean of the two middle values for
    an even count), e.g. a template from a few complexes; raises ValueError when there are none."""
    n = len(rows)
    if not n:
        raise ValueError("median of no rows")
    ordered = np.sort(np.array(rows), axis=0)
    out: FloatArray = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    return out
