"""Cut the MIT-BIH excerpts the signal-processing tests use (deterministic).

Run from the repository root: ``uv run python hil_fixtures/ecg_tests/make_excerpts.py [--mitdb DIR]``.
Provenance and licence of the source records: ``PROVENANCE.md`` in this folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import wfdb

HERE = Path(__file__).resolve().parent
DEFAULT_MITDB = HERE.parent.parent.parent / "shared" / "data" / "mitdb"

# (record, start s, length s, why)
EXCERPTS = [
    ("228", 0, 60, "frequent large PVCs next to small sinus beats (threshold adaptation)"),
    ("203", 600, 60, "multiform PVCs, atrial flutter/fibrillation, noise (hardest rhythm)"),
    ("104", 120, 60, "paced rhythm with fusion beats, lead V5"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mitdb", type=Path, default=DEFAULT_MITDB)
    args = ap.parse_args()
    for name, start_s, length_s, _why in EXCERPTS:
        rec = wfdb.rdrecord(str(args.mitdb / name), channels=[0], physical=False)
        fs = int(rec.fs)
        a, b = start_s * fs, (start_s + length_s) * fs
        out = f"mitdb_{name}_{start_s}s"
        wfdb.wrsamp(
            out,
            fs=fs,
            units=rec.units,
            sig_name=rec.sig_name,
            d_signal=rec.d_signal[a:b],
            p_signal=None,
            fmt=["212"],
            adc_gain=rec.adc_gain,
            baseline=rec.baseline,
            write_dir=str(HERE),
            comments=[f"excerpt of MIT-BIH record {name}, samples {a}..{b}"],
        )
        ann = wfdb.rdann(str(args.mitdb / name), "atr", sampfrom=a, sampto=b - 1)
        wfdb.wrann(
            out, "atr", sample=np.asarray(ann.sample) - a, symbol=ann.symbol, aux_note=ann.aux_note,
            fs=fs, write_dir=str(HERE),
        )


if __name__ == "__main__":
    main()
