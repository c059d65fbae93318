"""VF/flutter alarms of our streaming detector, scored per episode and per second.

    uv run python bench/ecg_vf.py [--data DIR] [--lead 0] [--jobs N] [--noise em] [--snr 6 0] [--fs 130] [--lose 0.01]

Every WFDB record in DIR with an ``.atr`` file is streamed in 100 ms blocks through the ECG channel
as the daemon runs it (R-peak detector, quality index, VF detector and rhythm rules), clean and then mixed with a
noise record of the MIT-BIH Noise Stress Test Database (``--nstdb``, default: ``nstdb`` next to DIR;
channel 0 of the noise, at each ``--snr``).  VF/flutter is read from rhythm aux notes (``(VF``,
``(VFIB``, ``(VFL``) and ``[`` ... ``]`` annotations (an unclosed ``[`` runs to the record's end).

Scoring:

* episodes: annotated VF/flutter, adjacent segments merged; those shorter than 8 s are left out
  of the sensitivity.  Detected when the alarm is active at some moment of the episode; delay =
  from the episode's onset to the alarm (0 if the alarm was already on).
* ``false_alarm_episodes``: alarm raises outside every annotated VF/flutter, short ones included,
  allowing ``--tolerance-s`` (default 4 s, the detector's window) after an episode's end — the
  window that raised it still held the VF.
* onset mark: for each episode whose alarm was raised during it (or up to 10 s before: an alarm
  already on from an earlier episode marks no onset), the alarm's onset time minus the annotated
  onset (negative: marked before the annotation) — where the evidence strip draws the onset.
* any alarm: for each episode (8 s or more), how soon after its onset some alarm was on, VF, VT
  or the technical "no valid ECG": whether the monitor called someone to look at all (VF read as
  VT, or as a signal it cannot read, still does).
* ``Sp_second``: share of the seconds without annotated VF/flutter in which the alarm is off.
  Seconds within ``--grace-s`` (default 10 s) after the end of an annotated episode are left out:
  the alarm clears with deliberate hysteresis.  The figure without that grace is printed too, and
  the alarm seconds it counts, by the rhythm annotated there (the last rhythm note before them),
  and the figure over the seconds not annotated VT either (VT alarmed as VF/flutter apart).

``--lose P`` drops each block with probability P (seeded by the record's name): a link that
loses frames, the channel seeing a gap at each (a Polar H10 frame is ~0.56 s: ``--block-s 0.56``).

``--fs HZ`` resamples every record (and the noise) to a device's rate, its annotations scaled
with it: the records were made at 250 Hz (vfdb) and 360 Hz (mitdb), while a Polar H10 strap
streams 130 Hz.

Printed per record, overall, and per noise level; the last line is the clean overall figure:

    overall vf: episodes=N detected=N Se_episode=PCT delay_median_s=S delay_max_s=S Sp_second=PCT false_alarm_episodes=N
"""

from __future__ import annotations

import argparse
import bisect
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.signal import sosfiltfilt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import channel_alarms
from aed_classes import NON_SHOCKABLE, RAPID_VT_PER_MIN, classify_seconds, table
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

from gateway.signal.ecg_filters import butter2_bandpass
from gateway.signal.ecg_rhythm import VENTRICULAR_FIBRILLATION
from gateway.signal.vt_detector import VENTRICULAR_TACHYCARDIA

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mitdb"
MIN_EPISODE_S = 8.0


@dataclass
class RecordScore:
    name: str
    episodes: int = 0
    detected: int = 0
    delays_s: list[float] = field(default_factory=list)
    false_alarms: int = 0
    other_s: int = 0  # scored non-VF seconds
    other_alarm_s: int = 0
    other_s_raw: int = 0  # without the post-episode grace
    other_alarm_s_raw: int = 0
    raises: int = 0
    onset_errors_s: list[float] = field(default_factory=list)
    any_delays_s: list[float] = field(default_factory=list)  # to any alarm on: VF, VT or "no valid ECG"
    false_by_rhythm: Counter[str] = field(default_factory=Counter)  # scored alarm seconds, by rhythm note
    scored_by_rhythm: Counter[str] = field(default_factory=Counter)  # scored seconds, by rhythm note
    aed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (AHA class, 's' | 'vf' | 'lethal') seconds

    def add(self, o: RecordScore) -> None:
        self.episodes += o.episodes
        self.detected += o.detected
        self.delays_s += o.delays_s
        self.false_alarms += o.false_alarms
        self.other_s += o.other_s
        self.other_alarm_s += o.other_alarm_s
        self.other_s_raw += o.other_s_raw
        self.other_alarm_s_raw += o.other_alarm_s_raw
        self.raises += o.raises
        self.onset_errors_s += o.onset_errors_s
        self.any_delays_s += o.any_delays_s
        self.false_by_rhythm += o.false_by_rhythm
        self.scored_by_rhythm += o.scored_by_rhythm
        self.aed += o.aed

    @property
    def se(self) -> float:
        return 100.0 * self.detected / self.episodes if self.episodes else float("nan")

    @property
    def sp(self) -> float:
        return 100.0 * (1 - self.other_alarm_s / self.other_s) if self.other_s else float("nan")

    @property
    def sp_raw(self) -> float:
        return 100.0 * (1 - self.other_alarm_s_raw / self.other_s_raw) if self.other_s_raw else float("nan")


ONSET_LOOKBACK_S = 10.0  # a raise this long before an annotated onset still marks that episode's onset


def alarm_intervals(
    x: npt.NDArray[np.float64],
    fs: float,
    block_s: float,
    onsets: list[tuple[int, int]] | None = None,
    vt: list[tuple[int, int]] | None = None,
    lose: float = 0.0,
    seed: int = 0,
    technical: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    """The sample intervals during which VF is alarmed (``channel_alarms``; into ``onsets``,
    each raise's sample and the onset sample it marks; into ``vt`` and ``technical``, the
    intervals of the VT alarm and of "no valid ECG")."""
    alarms = channel_alarms.alarm_intervals(x, fs, block_s, lose=lose, seed=seed, onsets=onsets)
    if vt is not None:
        vt += alarms[VENTRICULAR_TACHYCARDIA]
    if technical is not None:
        technical += alarms[channel_alarms.NO_VALID]
    return alarms[VENTRICULAR_FIBRILLATION]


def score(
    name: str,
    n: int,
    fs: float,
    truth: list[tuple[int, int]],
    alarms: list[tuple[int, int]],
    tol_s: float,
    grace_s: float,
    onsets: list[tuple[int, int]] | None = None,
    notes: list[tuple[int, str]] | None = None,
    classes: list[str] | None = None,
    vt_alarms: list[tuple[int, int]] | None = None,
    technical: list[tuple[int, int]] | None = None,
) -> RecordScore:
    r = RecordScore(name)
    on = np.zeros(n, dtype=bool)
    for a, b in alarms:
        on[a:b] = True
    said = on.copy()  # any alarm on: VF, VT or "no valid ECG"
    for a, b in (vt_alarms or []) + (technical or []):
        said[a:b] = True
    for a, b in truth:
        if (b - a) / fs < MIN_EPISODE_S:
            continue
        r.episodes += 1
        hit = np.flatnonzero(on[a:b])
        if len(hit):
            r.detected += 1
            r.delays_s.append(float(hit[0]) / fs)
        heard = np.flatnonzero(said[a:b])
        if len(heard):
            r.any_delays_s.append(float(heard[0]) / fs)
        marks = [o for i, o in onsets or [] if a - ONSET_LOOKBACK_S * fs <= i <= b]
        if marks:
            r.onset_errors_s.append((marks[0] - a) / fs)
    tol = int(tol_s * fs)
    r.raises = len(alarms)
    for a, _ in alarms:
        if not any(s <= a <= e + tol for s, e in truth):
            r.false_alarms += 1
    sec = round(fs)
    m = n // sec
    vf = np.zeros(n, dtype=bool)
    grace = np.zeros(n, dtype=bool)
    for a, b in truth:
        vf[a:b] = True
        grace[b : b + int(grace_s * fs)] = True
    vf_s = vf[: m * sec].reshape(m, sec).any(axis=1)
    grace_s_mask = grace[: m * sec].reshape(m, sec).any(axis=1)
    on_s = on[: m * sec].reshape(m, sec)[:, -1]  # the alarm state at the end of each second
    raw = ~vf_s
    scored = raw & ~grace_s_mask
    r.other_s_raw, r.other_alarm_s_raw = int(raw.sum()), int((on_s & raw).sum())
    r.other_s, r.other_alarm_s = int(scored.sum()), int((on_s & scored).sum())
    if notes:
        # The rhythm annotated at each false alarm second's start: the last note at or before it.
        starts = [i for i, _ in notes]
        for k in np.flatnonzero(scored):
            j = bisect.bisect_right(starts, int(k) * sec) - 1
            note = notes[j][1] if j >= 0 else "?"
            r.scored_by_rhythm[note] += 1
            if on_s[k]:
                r.false_by_rhythm[note] += 1
    if classes:
        lethal = on.copy()
        for a, b in vt_alarms or []:
            lethal[a:b] = True
        lethal_s = lethal[: m * sec].reshape(m, sec)[:, -1]
        for k, c in enumerate(classes[:m]):
            if c in NON_SHOCKABLE and not scored[k]:
                continue  # the seconds Sp_second leaves out: some VF in them, or the grace after it
            r.aed[(c, "s")] += 1
            r.aed[(c, "vf")] += int(on_s[k])
            r.aed[(c, "lethal")] += int(lethal_s[k])
    return r


def evaluate(
    path: Path,
    lead: int,
    nstdb: Path | None,
    noise: str | None,
    snr: float | None,
    block_s: float,
    tol_s: float,
    grace_s: float,
    rapid_vt_per_min: float = RAPID_VT_PER_MIN,
    rate: float | None = None,
    lose: float = 0.0,
) -> RecordScore:
    x, fs = load(path, lead, rate)
    notes = rhythm_notes(path, rate)
    # The classes are the truth's: measured on the clean record, before any noise, zero phase.
    classes = classify_seconds(notes, sosfiltfilt(butter2_bandpass(1.0, 30.0, fs), x), fs, rapid_vt_per_min)
    if noise is not None and snr is not None and nstdb is not None:
        x = mix_noise(x, fs, noise_record(nstdb, noise, fs, len(x), channel=0), snr)
    truth = vf_intervals(path, len(x), rate)
    onsets: list[tuple[int, int]] = []
    vt: list[tuple[int, int]] = []
    technical: list[tuple[int, int]] = []
    alarms = alarm_intervals(x, fs, block_s, onsets, vt, lose, record_seed(path), technical)
    return score(path.name, len(x), fs, truth, alarms, tol_s, grace_s, onsets, notes, classes, vt, technical)


def _fmt(tag: str, s: RecordScore) -> str:
    d = np.asarray(s.delays_s) if s.delays_s else np.asarray([np.nan])
    return (
        f"{tag}: episodes={s.episodes} detected={s.detected} Se_episode={s.se:.1f} "
        f"delay_median_s={np.median(d):.1f} delay_max_s={np.max(d):.1f} Sp_second={s.sp:.2f} "
        f"false_alarm_episodes={s.false_alarms}"
    )


def _onset_line(s: RecordScore) -> str:
    e = np.asarray(s.onset_errors_s)
    if not len(e):
        return "onset mark: no episode raised its own alarm"
    return (
        f"onset mark vs annotated onset, {len(e)} episodes raised: median {np.median(e):+.1f} s "
        f"(negative: before), median |error| {np.median(np.abs(e)):.1f} s, within 2 s {int((np.abs(e) <= 2).sum())}, "
        f"late by > 2 s {int((e > 2).sum())}"
    )


def _any_alarm_line(s: RecordScore) -> str:
    d = np.asarray(s.any_delays_s) if s.any_delays_s else np.asarray([np.nan])
    return (
        f"any alarm on (VF, VT or no valid ECG) during the episode: {len(s.any_delays_s)} of {s.episodes}, "
        f"from the annotated onset median {np.median(d):.1f} s, max {np.max(d):.1f} s, "
        f"within 10 s {int((d <= 10.0).sum())}"
    )


def run_set(paths: list[Path], args: argparse.Namespace, noise: str | None, snr: float | None) -> RecordScore:
    jobs = [
        (
            p,
            args.lead,
            args.nstdb,
            noise,
            snr,
            args.block_s,
            args.tolerance_s,
            args.grace_s,
            args.rapid_vt,
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
    print(
        f"{'record':>7} {'ep':>3} {'det':>3} {'delays s':>16} {'raises':>6} {'false':>5} {'Sp_s %':>7} {'Sp raw %':>8}"
    )
    total = RecordScore("overall")
    for r in results:
        total.add(r)
        delays = " ".join(f"{d:.0f}" for d in r.delays_s)[:16]
        print(
            f"{r.name:>7} {r.episodes:>3} {r.detected:>3} {delays:>16} {r.raises:>6} {r.false_alarms:>5} "
            f"{r.sp:7.2f} {r.sp_raw:8.2f}"
        )
    print(f"{label}: Sp_second without the {args.grace_s:g} s post-episode grace = {total.sp_raw:.2f} %")
    print(f"{label}: {_onset_line(total)}")
    print(f"{label}: {_any_alarm_line(total)}")
    by_rhythm = ", ".join(f"{k} {v}" for k, v in total.false_by_rhythm.most_common())
    print(f"{label}: alarm seconds counted against Sp_second, by annotated rhythm: {by_rhythm or 'none'}")
    print(f"{label}: {_outside_vt_line(total)}")
    print("\n".join(table(total.aed, label)))
    print(_fmt(f"{label} vf", total))
    return total


def _outside_vt_line(r: RecordScore) -> str:
    """Sp_second over the scored seconds not annotated VT either: how much of the figure is VT
    alarmed as VF/flutter (a sinusoidal VT and a flutter look alike; defibrillators treat rapid VT
    as shockable), and how much the rest."""
    seconds = r.other_s - r.scored_by_rhythm["(VT"]
    alarmed = r.other_alarm_s - r.false_by_rhythm["(VT"]
    sp = 100.0 * (1 - alarmed / seconds) if seconds else float("nan")
    return (
        f"Sp_second outside annotated VT too = {sp:.2f} % ({alarmed} alarm seconds of {seconds}; "
        f"in VT: {r.false_by_rhythm['(VT']} of {r.scored_by_rhythm['(VT']})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of WFDB records (.hea/.dat/.atr)")
    ap.add_argument("--nstdb", type=Path, default=None, help="noise records (default: nstdb next to --data)")
    ap.add_argument("--noise", default="em", help="noise record mixed in: em, ma or bw (default em)")
    ap.add_argument("--snr", type=float, nargs="*", default=[6.0, 0.0], help="noise levels in dB (default 6 0)")
    ap.add_argument("--lead", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--block-s", type=float, default=0.1)
    ap.add_argument("--tolerance-s", type=float, default=4.0)
    ap.add_argument("--grace-s", type=float, default=10.0)
    ap.add_argument("--records", nargs="*")
    ap.add_argument(
        "--fs",
        type=float,
        help="resample the records (and their annotations) to this rate: a device's, e.g. 130 for a Polar H10",
    )
    ap.add_argument(
        "--lose",
        type=float,
        default=0.0,
        help="share of the --block-s blocks lost, at random (a link that drops frames: the channel sees gaps)",
    )
    ap.add_argument(
        "--rapid-vt",
        type=float,
        default=RAPID_VT_PER_MIN,
        help=f"rate (/min) from which annotated VT is 'rapid VT' in the AED class table (default {RAPID_VT_PER_MIN:g})",
    )
    args = ap.parse_args(argv)
    if args.nstdb is None:
        args.nstdb = args.data.resolve().parent / "nstdb"
    paths = annotated_records(args.data, args.records)
    if not paths:
        print(f"no annotated WFDB records in {args.data}", file=sys.stderr)
        return 2
    args.n_records = len(paths)
    return clean_and_noisy(args, "vf", lambda noise, snr: run_set(paths, args, noise, snr), _fmt)


if __name__ == "__main__":
    raise SystemExit(main())
