"""R-peak accuracy of our streaming detector, side by side with four open-source references.

    uv sync --group bench   # sleepecg and neurokit2 (wfdb comes with the dev group)
    uv run python bench/ecg_accuracy.py [--data DIR] [--only-ours] [--jobs N] [--block-s 0.1] [--fs 130]

Every WFDB record in DIR that has an ``.atr`` file is scored on lead 0 against its beat
annotations (the beat symbols of the MIT-BIH/AAMI convention, non-beat labels ignored), with a
±150 ms match window.  Ours is fed in 100 ms blocks, as the daemon feeds it; the references run in
batch over the whole record.  Per record: Se, +P, F1 for every detector, our heart-rate error
(10 s windows, 60/median RR, against the annotations) and our detection latency (from the
annotated R wave to the sample whose arrival made the beat certain; the transport adds up to one
block on top).  Totals are gross (TP/FP/FN summed over records).  ``--fs`` resamples the records
and their annotations to a device's rate (a Polar H10 strap: 130 Hz), for ours and the references.  The last line is:

    overall ours: Se=… +P=… F1=… latency_median_ms=… latency_max_ms=…
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vf_data import annotations, load

from gateway.signal.rpeak_detector import DetectorParams, RPeakDetector

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
TOLERANCE_S = 0.150
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mitdb"
REFERENCES = ("gqrs", "xqrs", "sleepecg", "nk_pantompkins")


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: Score) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn

    @property
    def se(self) -> float:
        return 100.0 * self.tp / max(1, self.tp + self.fn)

    @property
    def ppv(self) -> float:
        return 100.0 * self.tp / max(1, self.tp + self.fp)

    @property
    def f1(self) -> float:
        return 100.0 * 2 * self.tp / max(1, 2 * self.tp + self.fp + self.fn)


@dataclass
class RecordResult:
    name: str
    n_ref: int
    ours: Score
    latencies_ms: list[float]
    hr_mae_bpm: float
    refs: dict[str, Score] = field(default_factory=dict)
    ref_errors: dict[str, str] = field(default_factory=dict)


def match(ref: IntArray, det: IntArray, tol: int) -> tuple[Score, list[tuple[int, int]]]:
    """Greedy one-to-one matching in time order: each reference takes the nearest free detection."""
    pairs: list[tuple[int, int]] = []
    used = np.zeros(len(det), dtype=bool)
    j = 0
    for i, r in enumerate(ref.tolist()):
        while j < len(det) and det[j] < r - tol:
            j += 1
        best = -1
        best_d = tol + 1
        k = j
        while k < len(det) and det[k] <= r + tol:
            if not used[k] and abs(int(det[k]) - r) < best_d:
                best, best_d = k, abs(int(det[k]) - r)
            k += 1
        if best >= 0:
            used[best] = True
            pairs.append((i, best))
    tp = len(pairs)
    return Score(tp=tp, fp=len(det) - tp, fn=len(ref) - tp), pairs


def windowed_hr(beats: IntArray, fs: float, n: int, win_s: float = 10.0) -> FloatArray:
    out = []
    w = int(win_s * fs)
    for start in range(0, n - w + 1, w):
        b = beats[(beats >= start) & (beats < start + w)]
        rr = np.diff(b)
        out.append(60.0 * fs / float(np.median(rr)) if len(rr) else np.nan)
    return np.asarray(out)


def run_ours(sig: FloatArray, fs: float, block_s: float) -> tuple[IntArray, IntArray]:
    det = RPeakDetector(fs, DetectorParams())
    step = max(1, round(block_s * fs))
    idx: list[int] = []
    decided: list[int] = []
    for start in range(0, len(sig), step):
        for b in det.feed(sig[start : start + step]):
            idx.append(b.index)
            decided.append(b.decided_index)
    return np.asarray(idx, dtype=np.int64), np.asarray(decided, dtype=np.int64)


def reference_detectors() -> dict[str, Callable[[FloatArray, float], IntArray]]:
    def gqrs(sig: FloatArray, fs: float) -> IntArray:
        from wfdb import processing  # noqa: PLC0415

        return np.asarray(processing.gqrs_detect(sig=sig, fs=fs), dtype=np.int64)

    def xqrs(sig: FloatArray, fs: float) -> IntArray:
        from wfdb import processing  # noqa: PLC0415

        return np.asarray(processing.xqrs_detect(sig=sig, fs=fs, verbose=False), dtype=np.int64)

    def sleep(sig: FloatArray, fs: float) -> IntArray:
        import sleepecg  # noqa: PLC0415

        return np.asarray(sleepecg.detect_heartbeats(sig, fs), dtype=np.int64)

    def nk_pt(sig: FloatArray, fs: float) -> IntArray:
        import neurokit2 as nk  # noqa: PLC0415

        clean = nk.ecg_clean(sig, sampling_rate=int(fs), method="pantompkins1985")
        peaks = nk.ecg_findpeaks(clean, sampling_rate=int(fs), method="pantompkins1985")["ECG_R_Peaks"]
        return np.asarray(peaks, dtype=np.int64)

    return {"gqrs": gqrs, "xqrs": xqrs, "sleepecg": sleep, "nk_pantompkins": nk_pt}


def evaluate(path: Path, with_refs: bool, block_s: float, lead: int = 0, rate: float | None = None) -> RecordResult:
    sig, fs = load(path, lead, rate)
    samples, symbols, _ = annotations(path, rate)
    ref = np.asarray([s for s, sym in zip(samples, symbols, strict=True) if sym in BEAT_SYMBOLS])
    tol = round(TOLERANCE_S * fs)

    idx, decided = run_ours(sig, fs, block_s)
    score, pairs = match(ref, idx, tol)
    lat = [1000.0 * (decided[j] - ref[i]) / fs for i, j in pairs]
    hr_ref = windowed_hr(ref, fs, len(sig))
    hr_ours = windowed_hr(idx, fs, len(sig))
    ok = ~np.isnan(hr_ref) & ~np.isnan(hr_ours)
    hr_mae = float(np.mean(np.abs(hr_ref[ok] - hr_ours[ok]))) if ok.any() else float("nan")
    result = RecordResult(path.name, len(ref), score, lat, hr_mae)
    if with_refs:
        for name, fn in reference_detectors().items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result.refs[name] = match(ref, np.sort(fn(sig, fs)), tol)[0]
            except Exception as e:  # a reference failing on a record must not hide the others
                result.ref_errors[name] = f"{type(e).__name__}: {e}"
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of WFDB records (.hea/.dat/.atr)")
    ap.add_argument("--only-ours", action="store_true", help="skip the four reference detectors")
    ap.add_argument("--jobs", type=int, default=1, help="records scored in parallel (default 1)")
    ap.add_argument("--block-s", type=float, default=0.1, help="streaming block length in seconds")
    ap.add_argument("--records", nargs="*", help="only these record names")
    ap.add_argument("--lead", type=int, default=0, help="signal index (default 0; the task scores lead 0)")
    ap.add_argument(
        "--fs", type=float, help="resample the records (and their annotations) to a device's rate, e.g. 130"
    )
    args = ap.parse_args(argv)

    paths = sorted(p.with_suffix("") for p in args.data.glob("*.hea") if p.with_suffix(".atr").exists())
    if args.records:
        paths = [p for p in paths if p.name in set(args.records)]
    if not paths:
        print(f"no annotated WFDB records in {args.data}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    jobs = [(p, not args.only_ours, args.block_s, args.lead, args.fs) for p in paths]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(evaluate, *zip(*jobs, strict=True)))
    else:
        results = [evaluate(*j) for j in jobs]

    refs = () if args.only_ours else REFERENCES
    head = f"{'record':>7} {'beats':>6} | {'Se':>6} {'+P':>6} {'F1':>6} {'FN':>4} {'FP':>4} "
    head += f"{'HRerr':>5} {'latmed':>6} {'latmax':>6}"
    head += "".join(f" | {n[:9]:>9}" for n in refs)
    print(f"lead {args.lead}")
    print(
        f"ours = gateway.signal.rpeak_detector, streaming {args.block_s * 1000:.0f} ms blocks; references: batch, F1 %"
    )
    print(head)
    total = Score()
    totals = {n: Score() for n in refs}
    all_lat: list[float] = []
    hr_errs = []
    for r in results:
        total.add(r.ours)
        all_lat.extend(r.latencies_ms)
        hr_errs.append(r.hr_mae_bpm)
        line = (
            f"{r.name:>7} {r.n_ref:>6} | {r.ours.se:6.2f} {r.ours.ppv:6.2f} {r.ours.f1:6.2f} {r.ours.fn:>4} "
            f"{r.ours.fp:>4} {r.hr_mae_bpm:5.2f} {np.median(r.latencies_ms):6.0f} {np.max(r.latencies_ms):6.0f}"
        )
        for n in refs:
            if n in r.refs:
                totals[n].add(r.refs[n])
                line += f" | {r.refs[n].f1:9.2f}"
            else:
                line += f" | {'error':>9}"
        print(line)
        for n, err in r.ref_errors.items():
            print(f"        {n} failed on {r.name}: {err}")
    worst = min(results, key=lambda r: r.ours.f1)
    print(
        f"records: {len(results)}, reference beats: {total.tp + total.fn}, wall time {time.perf_counter() - t0:.0f} s"
    )
    print(
        f"ours: worst record {worst.name} F1={worst.ours.f1:.2f}; HR error mean over records "
        f"{np.nanmean(hr_errs):.2f} bpm (10 s windows)"
    )
    for n in refs:
        s = totals[n]
        print(f"overall {n}: Se={s.se:.2f} +P={s.ppv:.2f} F1={s.f1:.2f} (FN={s.fn} FP={s.fp})")
    lat = np.asarray(all_lat)
    print(
        f"ours latency: p95 {np.percentile(lat, 95):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, "
        f"{int(np.sum(lat > 300))} of {len(lat)} matched beats over 300 ms"
    )
    print(
        f"overall ours: Se={total.se:.2f} +P={total.ppv:.2f} F1={total.f1:.2f} "
        f"latency_median_ms={np.median(all_lat):.0f} latency_max_ms={np.max(all_lat):.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
