"""Pacing pulses taken out of the ECG before any detector sees them.

A pacemaker's pulse reaches the front-end as a spike of millivolts (up to 700 mV at the skin,
IEC 60601-2-27 tests 2-700 mV) and 0.1-2 ms.  Left in the samples, the R-peak detector counts a
spike as a beat whether or not the heart answered it: a pacemaker that fails to capture during
a standstill, or that paces on through ventricular fibrillation, keeps "beats" at its rate, so
asystole is never called and the organised-rhythm veto holds VF off (``bench/ecg_pacing.py``).
That is why a monitor rejects pacing pulses before counting beats.

At the 125-500 Hz an ECG stream arrives at, a pulse is one to three samples, often smeared by
the converter's decimation filter, and cannot be told from a narrow QRS by the samples alone
(MIT-BIH's paced records 102 and 104 show spikes 10-15 ms wide).  The front-end, which sees the
pulse on its fast analogue path, says where it is: a block's ``pace`` offsets (the ``ecgstream``
protocol's version 2 frames carry them).  From each such sample on, for ``width`` samples, the
signal is held at its value just before the pulse.  A hold needs no sample after the pulse, so
it is decided block by block as the samples arrive, and the samples come out the same however
the device packs them.  The QRS the pulse evokes (a captured beat) lasts 120 ms or more and is
still found after the hold; a pulse the heart did not answer leaves a flat step, no beat.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

# From the pulse's first sample: the pulse itself (<= 2 ms), the converter's filter smearing it
# (a sinc3 decimator spans three output samples: 6 ms at 500 Hz) and the start of the
# electrode's recharge tail.  Short beside a paced QRS (>= 120 ms), which is still found.
DEFAULT_BLANK_MS = 12.0


def blank_width(fs: float, blank_ms: float = DEFAULT_BLANK_MS) -> int:
    """Samples held from each pulse on: at least the pulse's own sample and the next one."""
    return max(2, round(blank_ms * fs / 1000.0))


def blank(
    samples: FloatArray, first_index: int, pulses: Iterable[int], width: int, *, before: float | None, hold_until: int
) -> tuple[FloatArray, int]:
    """``samples`` (the stream's samples from ``first_index`` on) with the pacing pulses held out.

    ``pulses``: absolute sample indices where a pulse begins, ascending.  Each sample from a pulse
    to ``width`` after it takes the value of the sample before the pulse (itself held if it was
    in an earlier pulse's hold).  ``before``: the sample at ``first_index - 1`` as it came out of
    this function, None at a stream's start (a pulse on the stream's first sample has nothing to
    hold, and is left: any other choice would depend on how the samples are packed);
    ``hold_until``: the index (exclusive) to which a hold begun in an earlier block lasts.
    Returns the samples (a copy when any changed) and ``hold_until`` for the next block.
    """
    end = first_index + len(samples)
    out = samples
    if hold_until > first_index and before is not None:
        out = samples.copy()
        out[: hold_until - first_index] = before  # a hold goes on only after a held sample
    for p in pulses:
        if not first_index <= p < end:
            continue
        i = p - first_index
        value = float(out[i - 1]) if i > 0 else before
        if value is None:
            continue  # a stream's first sample: nothing to hold, nor to go on holding
        if out is samples:
            out = samples.copy()
        out[i : i + width] = value
        hold_until = max(hold_until, p + width)
    return out, hold_until
