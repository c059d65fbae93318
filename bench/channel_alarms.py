"""The alarms the ECG channel raises over a whole record, as sample intervals: the one loop the
rhythm benches (``ecg_vf.py``, ``ecg_vt.py``) stream their records through."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from vf_data import block_starts

from gateway.records import SampleBlock
from gateway.signal.ecg_channel import EcgChannel, EcgSettings
from gateway.signal.ecg_rhythm import VENTRICULAR_FIBRILLATION
from gateway.signal.vt_detector import VENTRICULAR_TACHYCARDIA

Intervals = list[tuple[int, int]]
NO_VALID = "no_valid_ecg"


def alarm_intervals(
    x: npt.NDArray[np.float64],
    fs: float,
    block_s: float,
    settings: EcgSettings | None = None,
    lose: float = 0.0,
    seed: int = 0,
    onsets: list[tuple[int, int]] | None = None,
) -> dict[str, Intervals]:
    """Run the ECG channel as the daemon does (``block_s`` blocks); the sample intervals of the
    VF and VT alarms and of "no valid ECG" (under ``NO_VALID``), an alarm still on at the end
    running to it.  Into ``onsets``: each VF raise's sample and the onset sample it marks.  Each
    block is lost with probability ``lose`` (``seed``): the channel sees a gap, as behind a link
    that drops frames."""
    channel = EcgChannel("bench", settings)
    step = max(1, round(block_s * fs))
    out: dict[str, Intervals] = {VENTRICULAR_TACHYCARDIA: [], VENTRICULAR_FIBRILLATION: [], NO_VALID: []}
    start: dict[str, int] = {}
    for a in block_starts(len(x), step, lose, seed):
        block = SampleBlock("bench", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a)
        result = channel.feed(block)
        for change in result.changes:
            i = round(change.time * fs)
            if not change.valid:
                start[NO_VALID] = i
            elif NO_VALID in start:
                out[NO_VALID].append((start.pop(NO_VALID), i))
        for ev in result.rhythm:
            if ev.condition not in out:
                continue
            i = round(ev.time * fs)
            if ev.active:
                start[ev.condition] = i
                if onsets is not None and ev.condition == VENTRICULAR_FIBRILLATION:
                    onsets.append((i, round(ev.onset_time * fs)))
            elif ev.condition in start:
                out[ev.condition].append((start.pop(ev.condition), i))
    for cond, i in start.items():
        out[cond].append((i, len(x)))
    return out
