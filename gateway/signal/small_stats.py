"""Medians of the few values the beat-by-beat code keeps (RR intervals, QRS energies).

``statistics.median`` is generic (any iterable, any number type) and costs several times the
sort of eight numbers; this is the same arithmetic for a short sequence of ints or floats.
"""

from __future__ import annotations

from collections.abc import Iterable


def median(values: Iterable[float]) -> float:
    """The median, with exactly ``statistics.median``'s result (the mean of the two middle
    values for an even count); raises ValueError when there are no values."""
    v = sorted(values)
    n = len(v)
    if not n:
        raise ValueError("median of no values")
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
