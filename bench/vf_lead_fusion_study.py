"""Would a two-lead device cut VF alarms in VT?  The VF alarm of each lead, and of both together.

    uv run python bench/vf_lead_fusion_study.py [--data ../shared/data/vfdb] [--jobs 2]

A study, not a detector: both leads of every vfdb record are streamed through their own ECG
channel as ``bench/ecg_vf.py`` streams lead 0, and the alarm is scored (``ecg_vf.score``) for the
rule "VF only while both leads say VF" (a second lead that still shows VT's complexes would veto
the first).  The per-lead figures are ``bench/ecg_vf.py --lead 0/1 --snr``.

Result (2026-12-01, this checkout): lead 0 alone Se_episode 96.3 %, Sp_second 93.29 %, 29 false
alarm episodes; lead 1 alone 92.6 %, 92.71 %, 46; both leads 88.9 %, 94.86 %, 27, with 1,903 of
the remaining false seconds still in annotated VT (lead 0 alone: 2,490).  vfdb's fast VT reads as
VF on both leads: not worth a fused alarm.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ecg_vf import RecordScore, _fmt, alarm_intervals, score
from vf_data import load, rhythm_notes, vf_intervals

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "vfdb"


def both_leads(path: Path) -> RecordScore:
    x0, fs = load(path, 0)
    x1, _ = load(path, 1)
    n = len(x0)
    on = np.ones(n, dtype=bool)
    for x in (x0, x1):
        lead = np.zeros(n, dtype=bool)
        for a, b in alarm_intervals(x, fs, 0.1):
            lead[a:b] = True
        on &= lead
    edges = np.diff(np.r_[0, on.astype(np.int8), 0])
    alarms = list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))
    return score(path.name, n, fs, vf_intervals(path, n), alarms, 4.0, 10.0, None, rhythm_notes(path))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    paths = [p.with_suffix("") for p in sorted(args.data.glob("*.atr"))]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(both_leads, paths))
    total = RecordScore("overall")
    for r in results:
        total.add(r)
    by_rhythm = ", ".join(f"{k} {v}" for k, v in total.false_by_rhythm.most_common())
    print(f"both leads: alarm seconds counted against Sp_second, by annotated rhythm: {by_rhythm or 'none'}")
    print(_fmt("both leads vf", total))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
