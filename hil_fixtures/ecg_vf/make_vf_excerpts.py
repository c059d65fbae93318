"""Cut the excerpts the VF, VT and asystole tests use (deterministic).

Run from the repository root: ``uv run python hil_fixtures/ecg_vf/make_vf_excerpts.py [--data DIR]``.
Provenance and licence of the source records: ``PROVENANCE.md`` in this folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from make_fixtures import cut_excerpt  # noqa: E402 - the shared cutter

DEFAULT_DATA = HERE.parent.parent.parent / "shared" / "data"

# (database, record, start s, length s, WFDB format, why)
EXCERPTS = [
    ("vfdb", "426", 615, 60, "212", "sinus rhythm, then ventricular fibrillation from 30 s"),
    ("vfdb", "429", 1835, 60, "212", "ventricular flutter from 20 s"),
    ("vfdb", "615", 600, 30, "212", "atrial fibrillation with a 17 s run of ventricular tachycardia from 5 s"),
    ("vfdb", "615", 300, 40, "212", "atrial fibrillation, a 4 s run of ventricular tachycardia from 26.8 s"),
    ("vfdb", "428", 1900, 40, "212", "ventricular tachycardia from 23.3 s"),
    ("vfdb", "421", 1260, 40, "212", "runs of ventricular tachycardia at 250 /min between pairs of sinus beats"),
    ("vfdb", "418", 1900, 40, "212", "a regular wide-complex rhythm at ~115 /min, near sinusoidal (annotated (N)"),
    ("vfdb", "609", 970, 80, "212", "atrial fibrillation, then polymorphic ventricular flutter from 51.1 s to 72.6 s"),
    ("vfdb", "611", 1180, 120, "212", "sinus tachycardia, then sustained monomorphic VT at ~140 /min from 16 s"),
    ("nstdb", "119e00", 300, 60, "16", "MIT-BIH 119 with electrode-motion noise at 0 dB (noise burst)"),
]
SOURCES = {"vfdb": "MIT-BIH Malignant Ventricular Ectopy Database", "nstdb": "MIT-BIH Noise Stress Test Database"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    for db, name, start_s, length_s, fmt, _why in EXCERPTS:
        cut_excerpt(args.data / db, name, start_s, length_s, HERE, prefix=db, fmt=fmt, source=SOURCES[db])


if __name__ == "__main__":
    main()
