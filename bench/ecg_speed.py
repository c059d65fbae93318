"""Throughput of our streaming R-peak detector against the batch references, on one core.

    uv sync --group bench
    uv run python bench/ecg_speed.py [--data DIR] [--records 100 ...] [--seconds 600] [--block-s 0.1]
    uv run python bench/ecg_speed.py --chain [--rounds 3] [--baseline DIR]

Figures are seconds of ECG processed per CPU-second (``time.process_time``, this process only,
BLAS/OpenMP pinned to one thread).  Ours is fed in 100 ms blocks, as from a live device, and
includes the ECG quality index when ``--with-quality`` is given; ``--chain`` runs the whole ECG
channel the pipeline runs instead (R-peak detector, quality index, VF/flutter detector, asystole,
heart rate, HRV: ``gateway.signal.ecg_channel``); the references get the whole
excerpt at once (their best case).  Also printed: resident memory added by importing what the
detector needs, measured in a fresh interpreter.

With ``--chain`` the channel is measured as the daemon runs it (samples queued to the next
decision point) and, side by side, processing every block on arrival (``defer=False``) and, with
``--baseline DIR``, the ``EcgChannel`` of another checkout (e.g. ``git worktree add /tmp/base
main``) in a child process, and then this checkout in the same kind of child process: compare
those two (``baseline/this``).  The in-process figure is not comparable with a child's: the
bench process holds the signals, wfdb and pandas, and the same code measured against itself
read 0.92 that way (garbage collection walks more objects here).  Each is run ``--rounds`` times
in alternation and the median is printed (the machine's load moves every figure; the ratios
move less).  A breakdown then shows
where the channel's CPU time goes, stage by stage (each stage's own share, callees excluded,
timed around the stage's entry points (``bench/chain_stages.py``): the R-peak detector, the
quality index, the VF detector, the rhythm monitor (asystole, organised-rhythm check), beats to
heart rate/RR/HRV and readings, and the rest: the channel's plumbing and the bench's blocks).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chain_stages import STAGES, StageClock  # noqa: E402

from gateway.records import SampleBlock  # noqa: E402
from gateway.signal import ecg_quality  # noqa: E402
from gateway.signal.ecg_channel import EcgChannel  # noqa: E402
from gateway.signal.rpeak_detector import RPeakDetector  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mitdb"


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def import_cost() -> str:
    probe = (
        "import sys\n"
        "def rss():\n"
        "    for l in open('/proc/self/status'):\n"
        "        if l.startswith('VmRSS:'): return int(l.split()[1])\n"
        "a = rss(); import numpy; b = rss()\n"
        "sys.path.insert(0, sys.argv[1]); import gateway.signal.rpeak_detector as r\n"
        "from gateway.signal import ecg_quality as q\n"
        "r.RPeakDetector(250.0).feed(numpy.zeros(25)); q.feed(q.new_quality_state(250.0), numpy.zeros(25))\n"
        "c = rss(); import scipy.signal; d = rss()\n"
        "print(a, b, c, d)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", probe, root], capture_output=True, text=True, check=True)
    a, b, c, d = (int(x) / 1024 for x in out.stdout.split())
    return (
        f"interpreter {a:.0f} MB; +numpy {b - a:.1f} MB; +our detector and quality index running "
        f"{c - b:.1f} MB (total {c:.0f} MB RSS); a full 'import scipy.signal' would add {d - c:.1f} MB more"
    )


def cpu_seconds(fn: object, *args: object) -> float:
    t0 = time.process_time()
    fn(*args)  # type: ignore[operator]
    return time.process_time() - t0


def ours(sig: np.ndarray, fs: float, block_s: float, with_quality: bool) -> None:
    det = RPeakDetector(fs)
    q = ecg_quality.new_quality_state(fs) if with_quality else None
    step = max(1, round(block_s * fs))
    for start in range(0, len(sig), step):
        block = sig[start : start + step]
        det.feed(block)
        if q is not None:
            ecg_quality.feed(q, block)


def chain(sig: np.ndarray, fs: float, block_s: float, defer: bool = True) -> None:
    channel = EcgChannel("bench")
    step = max(1, round(block_s * fs))
    for start in range(0, len(sig), step):
        block = SampleBlock("bench", "ecg", fs, start / fs, sig[start : start + step], "mV", first_index=start)
        channel.feed(block, defer=defer)


# Runs in a child process with another checkout first on sys.path: that tree's EcgChannel, fed
# exactly like ``chain`` (its ``feed`` may predate the ``defer`` keyword).
_BASELINE = """
import sys, time, json
import numpy as np
sys.path.insert(0, sys.argv[1])
from gateway.records import SampleBlock
from gateway.signal.ecg_channel import EcgChannel
args = json.loads(sys.stdin.read())
signals = [(np.asarray(s, dtype=np.float64), fs) for s, fs in args["signals"]]
def run(sig, fs):
    ch = EcgChannel("bench")
    step = max(1, round(args["block_s"] * fs))
    for start in range(0, len(sig), step):
        ch.feed(SampleBlock("bench", "ecg", fs, start / fs, sig[start : start + step], "mV", first_index=start))
run(signals[0][0][:3600], signals[0][1])
t0 = time.process_time()
for s, fs in signals:
    run(s, fs)
print(time.process_time() - t0)
"""


def baseline_cpu(tree: Path, signals: list[tuple[np.ndarray, float]], block_s: float) -> float:
    payload = json.dumps({"signals": [(s.tolist(), fs) for s, fs in signals], "block_s": block_s})
    out = subprocess.run(
        [sys.executable, "-c", _BASELINE, str(tree)], input=payload, capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[-1])


def chain_figures(
    signals: list[tuple[np.ndarray, float]], block_s: float, rounds: int, baseline: Path | None
) -> dict[str, float]:
    """Median speed (x real time) of each variant of the whole channel, run in alternation."""
    total_s = sum(len(s) / fs for s, fs in signals)
    label = f"whole ECG channel, as the daemon runs it ({block_s * 1000:.0f} ms blocks)"
    runs: dict[str, list[float]] = {label: [], "whole ECG channel, every block processed on arrival": []}
    own = "whole ECG channel of this checkout, in a child process like the baseline's"
    if baseline is not None:
        runs[f"whole ECG channel of {baseline}"] = []
        runs[own] = []
    chain(signals[0][0][:3600], signals[0][1], block_s)  # warm-up
    for _ in range(rounds):
        for name, speeds in runs.items():
            if name == label:
                cpu = sum(cpu_seconds(chain, s, fs, block_s) for s, fs in signals)
            elif baseline is not None and name.endswith(str(baseline)):
                cpu = baseline_cpu(baseline, signals, block_s)
            elif name == own:
                cpu = baseline_cpu(Path(__file__).resolve().parent.parent, signals, block_s)
            else:
                cpu = sum(cpu_seconds(chain, s, fs, block_s, False) for s, fs in signals)
            speeds.append(total_s / cpu)
    return {name: statistics.median(v) for name, v in runs.items()}


def chain_breakdown(signals: list[tuple[np.ndarray, float]], block_s: float, rounds: int) -> None:
    """Where the channel's time goes, stage by stage (see the module docstring and ``chain_stages``).

    Each stage's share of a run comes from the stage clock; the run's CPU time (thread clock, read
    once) turns the shares into microseconds per second of ECG.  Medians of ``rounds`` runs.
    """
    total_s = sum(len(s) / fs for s, fs in signals)
    runs: list[dict[str, float]] = []
    calls = 0
    for _ in range(rounds):
        clock = StageClock()
        with clock.installed():
            c0, w0 = time.thread_time(), time.perf_counter()
            for s, fs in signals:
                chain(s, fs, block_s)
            cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
        run = {name: cpu * sec / wall for name, sec in clock.seconds.items()}
        run["plumbing"] = cpu - sum(run.values())
        run["whole"] = cpu
        runs.append(run)
        calls = clock.calls
    med = {name: statistics.median(r.get(name, 0.0) for r in runs) for name in [*STAGES, "plumbing", "whole"]}
    whole = med.pop("whole")
    print(f"breakdown of the channel as the daemon runs it (instrumented runs: {total_s / whole:.0f}x real time):")
    for name, sec in med.items():
        alone = f"{total_s / sec:10.0f}x real time alone" if sec > 0 else ""
        print(f"  {name:40s} {100 * sec / whole:5.1f} %  {1e6 * sec / total_s:7.1f} us per s of ECG  {alone}")
    print(f"  ({calls} stage calls timed per run; plumbing includes the bench's SampleBlock construction)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--records", nargs="*", default=["100", "119", "203", "208", "228", "104"])
    ap.add_argument("--seconds", type=float, default=600.0, help="excerpt length per record")
    ap.add_argument("--block-s", type=float, default=0.1)
    ap.add_argument("--with-quality", action="store_true", help="also run the ECG quality index on each block")
    ap.add_argument("--chain", action="store_true", help="the whole ECG channel (VF detector included)")
    ap.add_argument("--only-ours", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="--chain: runs of each variant, in alternation")
    ap.add_argument("--baseline", type=Path, help="--chain: also time the EcgChannel of this checkout")
    args = ap.parse_args(argv)

    import wfdb  # noqa: PLC0415

    names = [r for r in args.records if (args.data / f"{r}.hea").exists()]
    if not names:
        names = sorted(p.stem for p in args.data.glob("*.hea"))[:6]
    signals = []
    for name in names:
        rec = wfdb.rdrecord(str(args.data / name), channels=[0])
        n = min(rec.sig_len, int(args.seconds * rec.fs))
        signals.append((np.nan_to_num(rec.p_signal[:n, 0]).astype(np.float64), float(rec.fs)))
    total_s = sum(len(s) / fs for s, fs in signals)
    print(f"records {' '.join(names)}: {total_s:.0f} s of ECG, lead 0; single thread")
    print(f"imports: {import_cost()}")

    results: dict[str, float] = {}
    if args.chain:
        results = chain_figures(signals, args.block_s, max(1, args.rounds), args.baseline)
        label = next(iter(results))
    else:
        ours(signals[0][0][:3600], signals[0][1], args.block_s, args.with_quality)  # warm-up: lazy scipy import
        cpu = sum(cpu_seconds(ours, s, fs, args.block_s, args.with_quality) for s, fs in signals)
        quality = " + quality" if args.with_quality else ""
        label = f"ours (streaming{quality}, {args.block_s * 1000:.0f} ms blocks)"
        results[label] = total_s / cpu

    if not args.only_ours:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from ecg_accuracy import reference_detectors  # noqa: PLC0415

        for name, fn in reference_detectors().items():
            fn(signals[0][0][:3600], signals[0][1])  # warm-up: imports, JIT, caches
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cpu = sum(cpu_seconds(fn, s, fs) for s, fs in signals)
            results[f"{name} (batch)"] = total_s / cpu

    base = results[label]
    width = max(45, *(len(n) for n in results))
    for name, speed in results.items():
        ratio = "" if name == label else f"   ours/this = {base / speed:.2f}"
        print(f"{name:{width}s} {speed:10.0f} s of ECG per CPU-second ({speed:.0f}x real time){ratio}")
    if args.chain and args.baseline is not None:
        theirs = results[f"whole ECG channel of {args.baseline}"]
        mine = next(v for k, v in results.items() if k.startswith("whole ECG channel of this checkout"))
        print(f"this checkout / {args.baseline}, both in a child process: {mine / theirs:.3f}")
    if args.chain:
        chain_breakdown(signals, args.block_s, max(1, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
