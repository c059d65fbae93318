"""Pacemaker spikes against the lethal-rhythm alarms: left in the samples, or marked by the front-end.

    uv run python bench/ecg_pacing.py [--data ../shared/data] [--jobs 2] [--records 119 203 ...]
        [--mv 1 3 10] [--wide 1 2]

A pacemaker's pulse is a spike of millivolts, one or two samples at the stream's rate.  A front-end
with pace detection marks where each one is (``SampleBlock.pace``, the ``ecgstream`` protocol's
version 2 frames) and the ECG channel holds them out (``gateway.signal.pace_blanking``); from a
front-end without it, they reach the detectors as they are.  The spikes here are synthetic
(rectangles of ``--mv`` and ``--wide`` samples at 70 /min, added to recorded ECG): no database in
``../shared/data`` records a pacemaker at a rate that keeps its spikes.  Three sets, each through
the ECG channel the daemon runs (lead 0, 100 ms blocks), each printed for no spikes, spikes
unmarked and spikes marked:

* **VF paced through** (a pacemaker that does not sense VF): every annotated VF/flutter episode
  of 8 s or more in the MIT-BIH Malignant Ventricular Ectopy Database, from 60 s before it to
  60 s into it (or its end), spikes from its onset.  Detected: a VF alarm raised within the episode.
* **Standstill, pacing not captured**: ``bench/ecg_asystole.py``'s synthetic standstills (30 s of
  QRS cut out at five places in each MIT-BIH record), spikes through the standstill.  Detected: an
  asystole alarm raised during it; the delay is from the last beat before.
* **Captured pacing**: the first 5 min of each MIT-BIH record with a spike 80 ms before every
  annotated beat, before its QRS's onset (each one captured): the channel's beats against the annotations (150 ms), and
  lethal-rhythm alarms raised (none is right).

The last line is ``overall pacing: vf_marked=N/N vf_unmarked=N/N asystole_marked=N/N
asystole_unmarked=N/N captured_beats_se_marked=PCT captured_false_alarms_marked=N``, over all sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ecg_asystole import AFTER_S, BEFORE_S, PACED_SYMBOLS, PLACES, beats, cut_qrs  # noqa: E402
from vf_data import annotated_records, load, vf_intervals  # noqa: E402

from gateway.readings import SampleBlock  # noqa: E402
from gateway.signal.ecg_channel import EcgChannel  # noqa: E402
from gateway.signal.ecg_rhythm import ASYSTOLE, VENTRICULAR_FIBRILLATION  # noqa: E402

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
PACING_PER_MIN = 70.0
MIN_EPISODE_S = 8.0
STANDSTILL_S = 30.0
PACED_AFTER_S = 0.17  # bench/ecg_asystole.py's cut after a paced complex
CAPTURED_S = 300.0
# Before the QRS's onset (an annotation marks the peak, ~50 ms after the onset of a narrow QRS),
# where a pacemaker's pulse comes before the complex it evokes.
SPIKE_BEFORE_QRS_S = 0.080
MATCH_S = 0.15
LETHAL = (VENTRICULAR_FIBRILLATION, ASYSTOLE, "ventricular_tachycardia")

Spikes = tuple[float, int] | None  # (mV, samples wide); None: no spikes
Run = tuple[list[tuple[float, str, bool]], list[int]]  # (rhythm changes, beats)


def run_channel(x: FloatArray, fs: float, pulses: IntArray | None) -> Run:
    """Rhythm changes (seconds, condition, raised?) and beats of the channel over ``x``; the blocks
    carry ``pulses`` as their pace marks when given."""
    channel, step = EcgChannel("bench"), round(0.1 * fs)
    changes: list[tuple[float, str, bool]] = []
    found: list[int] = []
    for a in range(0, len(x), step):
        pace: tuple[int, ...] = ()
        if pulses is not None:
            lo, hi = np.searchsorted(pulses, [a, a + step])
            pace = tuple(int(p) - a for p in pulses[lo:hi])
        out = channel.feed(SampleBlock("bench", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a, pace=pace))
        changes += [(e.time, e.condition, e.active) for e in out.rhythm]
        found += out.beats
    return changes, found


def first_on(changes: list[tuple[float, str, bool]], condition: str, since: float) -> float | None:
    """When ``condition`` is first on at or after ``since`` (``since`` itself when it was raised
    before and is still on), else None."""
    on = False
    for s, c, active in changes:
        if c != condition:
            continue
        if s >= since and (active or on):
            return since if on else s
        on = active
    return since if on else None


def with_spikes(x: FloatArray, at: IntArray, spikes: tuple[float, int]) -> FloatArray:
    mv, wide = spikes
    y = x.copy()
    for i in at:
        y[i : i + wide] += mv
    return y


def pacing(fs: float, start: int, end: int) -> IntArray:
    return np.arange(start, end, round(60.0 / PACING_PER_MIN * fs), dtype=np.int64)


def variants(
    x: FloatArray, at: IntArray, sizes: list[tuple[float, int]]
) -> list[tuple[str, FloatArray, IntArray | None]]:
    """(label, samples, marks) for no spikes, then each size unmarked and marked."""
    out: list[tuple[str, FloatArray, IntArray | None]] = [("none", x, None)]
    for size in sizes:
        y = with_spikes(x, at, size)
        out += [(f"{size[0]:g}mV/{size[1]} unmarked", y, None), (f"{size[0]:g}mV/{size[1]} marked", y, at)]
    return out


@dataclass
class Tally:
    episodes: dict[str, int] = field(default_factory=dict)
    detected: dict[str, int] = field(default_factory=dict)
    delays: dict[str, list[float]] = field(default_factory=dict)
    beats: dict[str, int] = field(default_factory=dict)  # captured: annotated beats
    matched: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)  # captured: beats matching no annotation
    false_alarms: dict[str, int] = field(default_factory=dict)

    def count(self, table: str, label: str, n: int = 1) -> None:
        d = getattr(self, table)
        d[label] = d.get(label, 0) + n

    def delay(self, label: str, s: float) -> None:
        self.delays.setdefault(label, []).append(s)

    def add(self, o: Tally) -> None:
        for name in ("episodes", "detected", "beats", "matched", "extra", "false_alarms"):
            for k, v in getattr(o, name).items():
                self.count(name, k, v)
        for k, v in o.delays.items():
            self.delays.setdefault(k, []).extend(v)


def vf_paced(path: Path, sizes: list[tuple[float, int]]) -> Tally:
    x, fs = load(path)
    t = Tally()
    for a, b in vf_intervals(path, len(x)):
        if (b - a) / fs < MIN_EPISODE_S:
            continue
        lo, hi = max(0, a - round(60 * fs)), min(b, a + round(60 * fs))
        seg = x[lo:hi]
        at = pacing(fs, a - lo, hi - lo)
        for label, y, marks in variants(seg, at, sizes):
            changes, _ = run_channel(y, fs, marks)
            on_at = first_on(changes, VENTRICULAR_FIBRILLATION, (a - lo) / fs)
            t.count("episodes", label)
            if on_at is not None:
                t.count("detected", label)
                t.delay(label, on_at - (a - lo) / fs)
    return t


def standstill_paced(path: Path, sizes: list[tuple[float, int]]) -> Tally:
    x, fs = load(path)
    qrs = beats(path)
    paced = frozenset(beats(path, PACED_SYMBOLS).tolist())
    span = len(x) / fs
    t = Tally()
    for k in range(PLACES):
        start_s = BEFORE_S + (k + 0.5) * (span - BEFORE_S - AFTER_S - STANDSTILL_S) / PLACES
        a, b = round((start_s - BEFORE_S) * fs), round((start_s + STANDSTILL_S + AFTER_S) * fs)
        lo, hi = round(start_s * fs), round((start_s + STANDSTILL_S) * fs)
        last, after = qrs[qrs <= lo], qrs[qrs >= hi]
        if not len(last) or not len(after):
            continue
        y0 = cut_qrs(x[a:b], fs, qrs[(qrs > lo) & (qrs < hi)] - a, paced, a, PACED_AFTER_S)
        last_s, back_s = (int(last[-1]) - a) / fs, (int(after[0]) - a) / fs
        # The pacemaker's escape interval runs from the last beat.
        at = pacing(fs, int(last[-1]) - a + round(60.0 / PACING_PER_MIN * fs), int(after[0]) - a)
        for label, y, marks in variants(y0, at, sizes):
            changes, _ = run_channel(y, fs, marks)
            raises = [s for s, c, on in changes if on and c == ASYSTOLE and last_s < s <= back_s + 1.0]
            t.count("episodes", label)
            if raises:
                t.count("detected", label)
                t.delay(label, raises[0] - last_s)
    return t


def captured(path: Path, sizes: list[tuple[float, int]]) -> Tally:
    x, fs = load(path)
    n = min(len(x), round(CAPTURED_S * fs))
    x = x[:n]
    qrs = beats(path)
    qrs = qrs[(qrs > fs) & (qrs < n - 2 * fs)]
    at = qrs - round(SPIKE_BEFORE_QRS_S * fs)
    t = Tally()
    tol = round(MATCH_S * fs)
    for label, y, marks in variants(x, at, sizes):
        changes, found = run_channel(y, fs, marks)
        got = np.asarray(sorted(f for f in found if fs < f < n - 2 * fs), dtype=np.int64)
        idx = np.searchsorted(got, qrs)
        near = [
            min((abs(int(got[j]) - int(r)) for j in (i - 1, i) if 0 <= j < len(got)), default=tol + 1)
            for i, r in zip(idx, qrs, strict=True)
        ]
        matched = sum(d <= tol for d in near)
        t.count("beats", label, len(qrs))
        t.count("matched", label, matched)
        t.count("extra", label, max(0, len(got) - matched))
        t.count("false_alarms", label, sum(on and c in LETHAL for _, c, on in changes))
    return t


def job(args: tuple[str, Path, list[tuple[float, int]]]) -> tuple[str, str, Tally]:
    kind, path, sizes = args
    fn = {"vf": vf_paced, "standstill": standstill_paced, "captured": captured}[kind]
    return kind, path.name, fn(path, sizes)


def _median(v: list[float]) -> str:
    return f"{statistics.median(v):.1f}" if v else "-"


def _max(v: list[float]) -> str:
    return f"{max(v):.1f}" if v else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--records", nargs="*")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--mv", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    ap.add_argument("--wide", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    sizes = [(mv, w) for mv in args.mv for w in args.wide]
    mitdb = annotated_records(args.data / "mitdb", args.records)
    vfdb = [p.with_suffix("") for p in sorted((args.data / "vfdb").glob("*.hea"))]
    jobs = [("vf", p, sizes) for p in vfdb]
    jobs += [(kind, p, sizes) for kind in ("standstill", "captured") for p in mitdb]
    totals: dict[str, Tally] = {"vf": Tally(), "standstill": Tally(), "captured": Tally()}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for kind, _name, tally in pool.map(job, jobs):
            totals[kind].add(tally)
    labels = list(totals["vf"].episodes) or list(totals["captured"].beats)
    titles = {
        "vf": "VF paced through (vfdb, episodes >= 8 s): VF alarm raised",
        "standstill": "Standstill, pacing not captured (mitdb, 30 s): asystole alarm raised, delay from the last beat",
    }
    for kind, title in titles.items():
        t = totals[kind]
        print(f"\n{title}")
        print(f"{'spikes':<22} {'detected':>12} {'delay median s':>15} {'delay max s':>12}")
        for label in labels:
            n, d = t.episodes.get(label, 0), t.detected.get(label, 0)
            delays = t.delays.get(label, [])
            print(f"{label:<22} {f'{d}/{n}':>12} {_median(delays):>15} {_max(delays):>12}")
    t = totals["captured"]
    print(f"\nCaptured pacing (mitdb, first {CAPTURED_S:g} s, a spike 80 ms before every beat)")
    print(f"{'spikes':<22} {'beats Se %':>11} {'extra beats':>12} {'lethal alarms':>14}")
    for label in labels:
        n = t.beats.get(label, 0)
        se = 100.0 * t.matched.get(label, 0) / n if n else float("nan")
        print(f"{label:<22} {se:>11.2f} {t.extra.get(label, 0):>12} {t.false_alarms.get(label, 0):>14}")

    def over(kind: str, marked: bool) -> str:
        sel = [lb for lb in labels if lb.endswith(" marked" if marked else " unmarked")]
        tt = totals[kind]
        return f"{sum(tt.detected.get(lb, 0) for lb in sel)}/{sum(tt.episodes.get(lb, 0) for lb in sel)}"

    marked = [lb for lb in labels if lb.endswith(" marked")]
    n = sum(t.beats.get(lb, 0) for lb in marked)
    se = 100.0 * sum(t.matched.get(lb, 0) for lb in marked) / n if n else float("nan")
    false_marked = sum(t.false_alarms.get(lb, 0) for lb in marked)
    print(
        f"overall pacing: vf_marked={over('vf', True)} vf_unmarked={over('vf', False)} "
        f"asystole_marked={over('standstill', True)} asystole_unmarked={over('standstill', False)} "
        f"captured_beats_se_marked={se:.2f} captured_false_alarms_marked={false_marked}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
