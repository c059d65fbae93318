"""Rhythmic artefact over real rhythms: does it raise lethal-rhythm alarms?

    uv run python bench/ecg_artefact.py [--data ../shared/data/mitdb] [--jobs 2] [--records 119 ...]
        [--hz 3 4 5 6 8] [--rel 0.5 1 2]

A limb tremor, tooth brushing or shivering moves an electrode at 3-8 Hz, and on the ECG that looks
like ventricular flutter or tachycardia: a known cause of false VT/VF alarms (Knight et al., N Engl
J Med 1999;341:1270-1274).  The noise records of the MIT-BIH Noise Stress Test Database (electrode
motion, muscle, baseline wander) hold no such rhythm, so ``bench/ecg_vf.py`` and
``bench/ecg_vt.py`` never met one.  Here each MIT-BIH Arrhythmia record (lead 0, whole) gets a
burst of synthetic rhythmic artefact every ``--every-s`` (120 s), ``--burst-s`` (20 s) long: a
sinusoid whose frequency wanders by +-10 % (0.2 Hz) around ``--hz`` with a second harmonic of a
quarter of its size and an amplitude that swells and fades by +-30 % (0.3 Hz), of ``--rel`` times
the record's typical peak-to-peak (median per second).  Synthetic, not recorded: a model of the
thing, with the parameters printed.

Every record is streamed through the ECG channel the daemon runs (100 ms blocks).  Printed per
frequency and size: bursts, how many raised a VF alarm and how many a VT alarm (from the burst's
start to 10 s after its end), and how many were flagged "no valid ECG" in that time (what should
be said instead).  The records are known to raise neither alarm without the artefact
(``bench/ecg_vf.py``, ``bench/ecg_vt.py --min-episode-s 2``).  Last line:
``overall artefact: bursts=N vf_alarms=N vt_alarms=N technical_pct=PCT``.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vf_data import annotated_records, load, signal_power

from gateway.records import SampleBlock
from gateway.signal.ecg_channel import EcgChannel
from gateway.signal.ecg_rhythm import VENTRICULAR_FIBRILLATION
from gateway.signal.vt_detector import VENTRICULAR_TACHYCARDIA

FloatArray = npt.NDArray[np.float64]
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mitdb"
AFTER_S = 10.0


def artefact(n: int, fs: float, hz: float, size_mv: float, seed: int) -> FloatArray:
    """``n`` samples of the rhythmic artefact (module docstring), peak-to-peak about ``size_mv``."""
    t = np.arange(n) / fs
    rng = np.random.default_rng(seed)
    f = hz * (1.0 + 0.1 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(f) / fs
    envelope = 1.0 + 0.3 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi))
    wave = np.sin(phase) + 0.25 * np.sin(2 * phase + rng.uniform(0, 2 * np.pi))
    return 0.5 * size_mv * envelope * wave / 1.2  # the harmonic adds about a fifth to the peaks


def bursts(n: int, fs: float, every_s: float, burst_s: float) -> list[tuple[int, int]]:
    starts = np.arange(30.0, n / fs - burst_s - AFTER_S, every_s)
    return [(round(a * fs), round((a + burst_s) * fs)) for a in starts]


def run(job: tuple[Path, float, float, float, float]) -> tuple[float, float, int, int, int, int]:
    path, hz, rel, every_s, burst_s = job
    x, fs = load(path)
    size = rel * float(np.sqrt(8.0 * signal_power(x, fs)))  # the median peak-to-peak per second
    spans = bursts(len(x), fs, every_s, burst_s)
    x = x.copy()
    for k, (a, b) in enumerate(spans):
        x[a:b] += artefact(b - a, fs, hz, size, seed=k)
    channel = EcgChannel("bench")
    step = round(0.1 * fs)
    raised: dict[str, list[float]] = {VENTRICULAR_FIBRILLATION: [], VENTRICULAR_TACHYCARDIA: []}
    invalid: list[float] = []
    for a in range(0, len(x), step):
        out = channel.feed(SampleBlock("bench", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a))
        for ev in out.rhythm:
            if ev.active and ev.condition in raised:
                raised[ev.condition].append(ev.time)
        invalid += [c.time for c in out.changes if not c.valid]

    def hit(times: list[float], a: int, b: int) -> bool:
        return any(a / fs <= t <= b / fs + AFTER_S for t in times)

    vf = sum(hit(raised[VENTRICULAR_FIBRILLATION], a, b) for a, b in spans)
    vt = sum(hit(raised[VENTRICULAR_TACHYCARDIA], a, b) for a, b in spans)
    flagged = sum(hit(invalid, a, b) for a, b in spans)
    return hz, rel, len(spans), vf, vt, flagged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--records", nargs="*")
    ap.add_argument("--hz", type=float, nargs="*", default=[3.0, 4.0, 5.0, 6.0, 8.0])
    ap.add_argument("--rel", type=float, nargs="*", default=[0.5, 1.0, 2.0])
    ap.add_argument("--every-s", type=float, default=120.0)
    ap.add_argument("--burst-s", type=float, default=20.0)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    paths = annotated_records(args.data, args.records)
    if not paths:
        print(f"no annotated WFDB records in {args.data}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    jobs = [(p, hz, rel, args.every_s, args.burst_s) for hz in args.hz for rel in args.rel for p in paths]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run, jobs))
    else:
        results = [run(j) for j in jobs]
    print(f"{len(paths)} records (lead 0), a {args.burst_s:g} s burst every {args.every_s:g} s")
    print(f"{'Hz':>4} {'x p-p':>6} {'bursts':>7} {'VF':>5} {'VT':>5} {'no valid ECG':>13}")
    total = np.zeros(4, dtype=int)
    for hz in args.hz:
        for rel in args.rel:
            rows = np.array([r[2:] for r in results if r[0] == hz and r[1] == rel]).sum(axis=0)
            total += rows
            n, vf, vt, flagged = (int(v) for v in rows)
            print(f"{hz:4g} {rel:6g} {n:7d} {vf:5d} {vt:5d} {flagged:6d} ({100.0 * flagged / n:4.1f} %)")
    n, vf, vt, flagged = (int(v) for v in total)
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    print(f"overall artefact: bursts={n} vf_alarms={vf} vt_alarms={vt} technical_pct={100.0 * flagged / n:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
