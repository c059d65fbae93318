"""Cut the MIT-BIH excerpts the signal-processing tests use (deterministic).

Run from the repository root: ``uv run python hil_fixtures/ecg_tests/make_excerpts.py [--mitdb DIR]``.
Provenance and licence of the source records: ``PROVENANCE.md`` in this folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from make_fixtures import cut_excerpt  # noqa: E402 - the shared cutter next door

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
        cut_excerpt(args.mitdb, name, start_s, length_s, HERE)


if __name__ == "__main__":
    main()
