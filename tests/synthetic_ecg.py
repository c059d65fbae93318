"""Recorded ECG altered to make a rhythm the databases lack, for tests that need it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import wfdb

FIXTURES = Path(__file__).parent.parent / "hil_fixtures"
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")


def standstill(start_s: float = 40.0, end_s: float = 70.0) -> tuple[np.ndarray, float, float, float]:
    """Ventricular standstill: MIT-BIH 119's first 90 s with the QRS complexes cut out from
    ``start_s`` to ``end_s`` (a straight line across each; P and T waves and baseline kept).
    Returns (signal in uV, fs, the last beat before, the first beat after, in seconds)."""
    rel = "ecg/mitdb_119_0s"
    rec = wfdb.rdrecord(str(FIXTURES / rel), channels=[0])
    ann = wfdb.rdann(str(FIXTURES / rel), "atr")
    fs = float(rec.fs)
    x = rec.p_signal[: int(90 * fs), 0] * 1000.0
    beats = [int(r) for r in ann.sample if r < len(x) - 0.08 * fs]
    for r in beats:
        a, b = int(r - 0.06 * fs), int(r + 0.08 * fs)
        if start_s * fs < r < end_s * fs:
            x[a:b] = np.linspace(x[a], x[b], b - a)
    last = max(r for r in beats if r <= start_s * fs) / fs
    first_back = min(r for r in beats if r >= end_s * fs) / fs
    return x, fs, last, first_back


def beats_back(first_back_s: float, n: int) -> list[float]:
    """The first ``n`` annotated beats of MIT-BIH 119 from ``first_back_s`` on, in seconds."""
    rel = "ecg/mitdb_119_0s"
    fs = float(wfdb.rdheader(str(FIXTURES / rel)).fs)
    ann = wfdb.rdann(str(FIXTURES / rel), "atr")
    beats = [int(r) for r, sym in zip(ann.sample, ann.symbol, strict=True) if sym in BEAT_SYMBOLS]
    return [r / fs for r in beats if r >= first_back_s * fs - 1][:n]
