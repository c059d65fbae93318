"""Ventricular tachycardia alarms of the ECG channel, scored per episode against rhythm annotations.

    uv run python bench/ecg_vt.py [--data DIR] [--lead 0] [--jobs N] [--snr 6 0] [--min-episode-s 6] [--fs 130]
                                  [--lose 0.02]
                                  [--set min_width_ratio=1.2 ...]

Every WFDB record in DIR with an ``.atr`` file is streamed in 100 ms blocks through the ECG channel
as the daemon runs it (clean, then mixed with the ``--noise`` record of the MIT-BIH Noise Stress
Test Database at each ``--snr``).  Annotated VT is a ``(VT`` rhythm note up to the next rhythm note.

* episodes: annotated VT of at least ``--min-episode-s``; detected when the VT alarm is on at some
  moment from its onset to its end + ``--tolerance-s`` (the alarm waits for the beats' quality
  window), delay from the onset.  ``vt_or_vf`` counts those during which either the VT or the VF
  alarm was on: VF supersedes VT, and much of vfdb's fast VT looks like flutter.
* false alarms: VT raises outside every annotated VT and VF/flutter (``--tolerance-s`` after an
  episode's end allowed), counted per hour of recording; the rhythm annotated where each began is
  tallied.
* "no valid ECG" beside VT: the seconds of VT alarm during which the channel also reported no
  valid ECG, apart for the alarms that are true (overlap annotated VT or VF/flutter) and false: VT
  read as noise wrongly calls it an artefact, while noise taken for VT should still be reported.

The last line is the clean overall figure:

    overall vt: episodes=N detected=N Se_episode=PCT vt_or_vf=N delay_median_s=S false_alarms=N per_hour=X
        hours=H raises=N   (one line)

``raises`` counts every VT alarm raised, true or false: more raises than episodes is an alarm that
clears and comes back within one (non-sustained VT salvos, ``VtSettings.clear_s``).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from channel_alarms import NO_VALID, Intervals, alarm_intervals
from vf_data import (
    annotated_records,
    clean_and_noisy,
    load,
    mix_noise,
    noise_record,
    record_seed,
    rhythm_notes,
    vf_intervals,
)

from gateway.signal.ecg_channel import EcgSettings
from gateway.signal.ecg_rhythm import VENTRICULAR_FIBRILLATION
from gateway.signal.vt_detector import VENTRICULAR_TACHYCARDIA, VtSettings

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "vfdb"


@dataclass
class VtScore:
    name: str
    seconds: float = 0.0
    episodes: int = 0
    detected: int = 0
    vt_or_vf: int = 0
    delays_s: list[float] = field(default_factory=list)
    raises: int = 0
    false_alarms: int = 0
    false_rhythms: Counter[str] = field(default_factory=Counter)
    # VT alarm seconds, and those of them with "no valid ECG" on, for true and false alarms
    true_s: float = 0.0
    true_invalid_s: float = 0.0
    false_s: float = 0.0
    false_invalid_s: float = 0.0

    def add(self, o: VtScore) -> None:
        self.seconds += o.seconds
        self.episodes += o.episodes
        self.detected += o.detected
        self.vt_or_vf += o.vt_or_vf
        self.delays_s += o.delays_s
        self.raises += o.raises
        self.false_alarms += o.false_alarms
        self.false_rhythms += o.false_rhythms
        self.true_s += o.true_s
        self.true_invalid_s += o.true_invalid_s
        self.false_s += o.false_s
        self.false_invalid_s += o.false_invalid_s

    @property
    def se(self) -> float:
        return 100.0 * self.detected / self.episodes if self.episodes else float("nan")

    @property
    def per_hour(self) -> float:
        return self.false_alarms / (self.seconds / 3600.0) if self.seconds else float("nan")


def vt_intervals(notes: list[tuple[int, str]], n: int) -> Intervals:
    """Annotated VT: a ``(VT`` note up to the next rhythm note."""
    out: Intervals = []
    for k, (s, note) in enumerate(notes):
        if note == "(VT":
            out.append((s, notes[k + 1][0] if k + 1 < len(notes) else n))
    return out


def score(
    name: str,
    n: int,
    fs: float,
    notes: list[tuple[int, str]],
    vt: Intervals,
    vf: Intervals,
    alarms: dict[str, Intervals],
    min_episode_s: float,
    tol_s: float,
) -> VtScore:
    r = VtScore(name, seconds=n / fs)
    tol = round(tol_s * fs)
    vt_on, vf_on = alarms[VENTRICULAR_TACHYCARDIA], alarms[VENTRICULAR_FIBRILLATION]
    for a, b in vt:
        if (b - a) / fs < min_episode_s:
            continue
        r.episodes += 1
        hits = [max(s, a) for s, e in vt_on if s <= b + tol and e > a]
        if hits:
            r.detected += 1
            r.delays_s.append((min(hits) - a) / fs)
        if hits or any(s <= b + tol and e > a for s, e in vf_on):
            r.vt_or_vf += 1
    r.raises = len(vt_on)
    for s, e in vt_on:
        invalid = sum(max(0, min(e, b) - max(s, a)) for a, b in alarms[NO_VALID]) / fs
        if any(a <= e and s <= b + tol for a, b in vt + vf):
            r.true_s += (e - s) / fs
            r.true_invalid_s += invalid
        else:
            r.false_s += (e - s) / fs
            r.false_invalid_s += invalid
        if not any(a <= s <= b + tol for a, b in vt + vf):
            r.false_alarms += 1
            before = [note for i, note in notes if i <= s]
            r.false_rhythms[before[-1] if before else "?"] += 1
    return r


def evaluate(
    path: Path,
    lead: int,
    nstdb: Path | None,
    noise: str | None,
    snr: float | None,
    block_s: float,
    min_episode_s: float,
    tol_s: float,
    vt: VtSettings,
    rate: float | None = None,
    lose: float = 0.0,
) -> VtScore:
    x, fs = load(path, lead, rate)
    if noise is not None and snr is not None and nstdb is not None:
        x = mix_noise(x, fs, noise_record(nstdb, noise, fs, len(x), channel=0), snr)
    notes = rhythm_notes(path, rate)
    alarms = alarm_intervals(x, fs, block_s, EcgSettings(vt=vt), lose, record_seed(path))
    vt_truth, vf_truth = vt_intervals(notes, len(x)), vf_intervals(path, len(x), rate)
    return score(path.name, len(x), fs, notes, vt_truth, vf_truth, alarms, min_episode_s, tol_s)


def _fmt(tag: str, s: VtScore) -> str:
    d = np.median(s.delays_s) if s.delays_s else float("nan")
    return (
        f"{tag}: episodes={s.episodes} detected={s.detected} Se_episode={s.se:.1f} vt_or_vf={s.vt_or_vf} "
        f"delay_median_s={d:.1f} false_alarms={s.false_alarms} per_hour={s.per_hour:.2f} hours={s.seconds / 3600:.1f} "
        f"raises={s.raises}"
    )


def run_set(paths: list[Path], args: argparse.Namespace, noise: str | None, snr: float | None) -> VtScore:
    vt = VtSettings(**{k: type(getattr(VtSettings(), k))(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    jobs = [
        (
            p,
            args.lead,
            args.nstdb,
            noise,
            snr,
            args.block_s,
            args.min_episode_s,
            args.tolerance_s,
            vt,
            args.fs,
            args.lose,
        )
        for p in paths
    ]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(evaluate, *zip(*jobs, strict=True)))
    else:
        results = [evaluate(*j) for j in jobs]
    label = "clean" if noise is None else f"{noise} {snr:g} dB"
    print(f"-- {label} --")
    print(f"{'record':>7} {'ep':>3} {'det':>3} {'vt|vf':>5} {'delays s':>16} {'raises':>6} {'false':>5}")
    total = VtScore("overall")
    for r in results:
        total.add(r)
        delays = " ".join(f"{d:.0f}" for d in r.delays_s)[:16]
        counts = f"{r.episodes:>3} {r.detected:>3} {r.vt_or_vf:>5}"
        print(f"{r.name:>7} {counts} {delays:>16} {r.raises:>6} {r.false_alarms:>5}")
    rhythms = ", ".join(f"{k} {v}" for k, v in total.false_rhythms.most_common())
    print(f"{label}: false alarms began in: {rhythms or 'none'}")
    print(
        f"{label}: VT alarm seconds with 'no valid ECG' on: true alarms {total.true_invalid_s:.0f} of "
        f"{total.true_s:.0f} s, false alarms {total.false_invalid_s:.0f} of {total.false_s:.0f} s"
    )
    print(_fmt(f"{label} vt", total))
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of WFDB records (.hea/.dat/.atr)")
    ap.add_argument("--nstdb", type=Path, default=None, help="noise records (default: nstdb next to --data)")
    ap.add_argument("--noise", default="em", help="noise record mixed in: em, ma or bw (default em)")
    ap.add_argument("--snr", type=float, nargs="*", default=[6.0, 0.0], help="noise levels in dB (default 6 0)")
    ap.add_argument("--lead", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--block-s", type=float, default=0.1)
    ap.add_argument("--min-episode-s", type=float, default=6.0)
    ap.add_argument("--tolerance-s", type=float, default=4.0)
    ap.add_argument("--records", nargs="*")
    ap.add_argument("--lose", type=float, default=0.0, help="share of the blocks lost, at random (gaps)")
    ap.add_argument(
        "--fs", type=float, help="resample the records (and their annotations) to a device's rate, e.g. 130"
    )
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="NAME=VALUE", help="VtSettings to try instead of the defaults"
    )
    args = ap.parse_args(argv)
    if args.nstdb is None:
        args.nstdb = args.data.resolve().parent / "nstdb"
    paths = annotated_records(args.data, args.records)
    if not paths:
        print(f"no annotated WFDB records in {args.data}", file=sys.stderr)
        return 2
    args.n_records = len(paths)
    return clean_and_noisy(args, "vt", lambda noise, snr: run_set(paths, args, noise, snr), _fmt)


if __name__ == "__main__":
    raise SystemExit(main())
