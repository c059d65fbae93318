"""Does rhythm-level context over 6-10 s tell fast VT from VF/flutter where 4 s window features cannot?

    uv run python bench/vf_context_study.py [--data ../shared/data] [--jobs 2] \
        --sweep-cache DIR --feature-cache DIR [--context-s 8]

A study, not a detector: it prints figures to decide whether such evidence is worth shipping.  On
vfdb lead 0 (clean) it takes every VF step the shipped detector makes (``bench/vf_sweep.py``
recordings: probability, organised-rhythm veto, quality suppressions) and, at each step's end, the
band-passed, decimated ECG the detector sees, and computes:

* **cycle regularity over ``--context-s`` (8 s)**: the autocorrelation at the dominant period P
  (``acf_p``, best lag of 0.15-1.5 s) and at 2P and 3P (a regular VT keeps repeating itself; VF
  decorrelates), the rate that period gives (``rate_hz``), and a **cycle-to-cycle correlation**:
  the signal cut into consecutive cycles of P samples, each cycle correlated with the next one at
  the best shift within ±P/4 — mean (``cycle_corr``) and lowest (``cycle_corr_min``); the
  spread of those best cycle lengths (``cycle_len_cv``) and of the cycles' peak-to-peak
  amplitudes (``cycle_amp_cv``, the amplitude envelope);
* **stability across consecutive windows**: the standard deviation over the last 6 steps of the
  detector's own dominant frequency, mean frequency, autocorrelation peak and log amplitude
  (VF's dominant frequency is said to wander, VT's to hold);
* **the R-peak detector's beats** (streamed through the ``EcgChannel``): a step is vetoed when the beats of
  the last ``W`` s come at most at ``R``/min with an RR spread within ``S`` of the median — the
  channel's organised-rhythm veto extended to fast regular rhythms.

It prints (1) each context measure's AUC, VF/flutter against annotated VT and against every other
rhythm, among the steps the detector calls VF-like (where a veto would act); (2) a second-stage
logistic gate over those measures, trained on the VF-like steps only, applied as "a VF-like step
stays VF-like only if the gate agrees", scored by ``bench/ecg_vf.py``'s rules both in-sample and
leave-records-out (5 folds by record: each record scored by a gate that never saw it; the
first-stage model is the shipped one); (3) the beat-regularity veto over a small grid.

Result with the 13-feature model (0.8, 7 of 8, clear 8): no measure separates the VF-like VT from
VF/flutter (AUC 0.41-0.60).  The best gate (>= 0.3) gains 0.8 point of Sp_second leave-records-out
(90.62 -> 91.39 %, Se 96.3 %) but delays the median alarm from 0.3 to 7.0 s and adds 2 false alarm
episodes, and trained on every record (what would ship) it misses one more episode (Se 92.6 %):
not shipped.  The per-rhythm table shows the ceiling: with no alarm at all on annotated VT,
Sp_second would still be 97.25 % (annotated noise and "(N" stretches of 418/419 that look like
flutter).  Cost of ``context_features``: about 0.4-0.6 ms per step on this machine, 2-3 times
the 4 s window features.

Rerun on 25006ae (the model confirmed by the trees since): the AUCs, VF/flutter against VT, are
0.41-0.60 still; the shipped line is 93.25 % and 28, and 98.97 % with annotated VT left unscored.
Until then the gate and beat-regularity rows replayed the logistic model alone, the trees'
confirmation left out (90.64 % and 35 at the lowest gate, against the shipped 93.25 % and 28).
With it: the lowest gate in-sample is the shipped line exactly; leave-records-out the best gate
keeping Se (>= 0.3) gives 93.74 % with 30 false alarm episodes and the longest delay 12.8 -> 22.3
s; the best beat-regularity veto (4 s, <= 250 /min, spread 0.3) 93.43 % with 26, the median delay
7.0 -> 7.6 s, picked from 18 settings on these very records.  Neither shipped: at most half a
point, against the 6 that separate 93.25 % from 99.5 %.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))

from vf_data import load  # noqa: E402

from gateway.signal import vf_features  # noqa: E402
from gateway.signal.ecg_filters import SosFilter  # noqa: E402
from gateway.signal.vf_detector import VfParams, decimation, feature_sos  # noqa: E402

if TYPE_CHECKING:
    import numpy.typing as npt
    from vf_sweep import Recording

    FloatArray = npt.NDArray[np.float64]

DEFAULT_DATA = ROOT.parent / "shared" / "data"
LAGS_S = (0.15, 1.5)
CONTEXT_NAMES = ("acf_p", "acf_2p", "acf_3p", "rate_hz", "cycle_corr", "cycle_corr_min", "cycle_len_cv", "cycle_amp_cv")
HISTORY = ("peak_freq_hz", "mean_freq_hz", "acf_max", "log_amplitude")
HISTORY_STEPS = 6
VF_NOTES = ("(VF", "(VFIB", "(VFL")


def context_features(seg: FloatArray, fs: float) -> FloatArray:
    """Cycle regularity of one band-passed segment (several seconds): see the module docstring.
    Returns the values in ``CONTEXT_NAMES`` order; NaN where a segment holds too few cycles."""
    s = np.asarray(seg, dtype=np.float64) - float(np.mean(seg))
    n = len(s)
    lo, hi = max(1, round(LAGS_S[0] * fs)), min(n - 1, round(LAGS_S[1] * fs))
    out = np.full(len(CONTEXT_NAMES), np.nan)
    energy = float(s @ s)
    if hi <= lo or energy <= 0.0:
        return out
    nfft = 1 << (2 * n - 1).bit_length()
    spec = np.fft.rfft(s, nfft)
    r = np.fft.irfft(spec * np.conj(spec), nfft)[:n] / energy  # biased linear autocorrelation, r[0] = 1
    p = lo + int(np.argmax(r[lo:hi]))
    out[0:3] = [r[m * p] if m * p < n else np.nan for m in (1, 2, 3)]
    out[3] = fs / p
    shift = max(1, p // 4)
    starts = np.arange(0, n - 2 * p - shift + 1, p)
    if len(starts) < 2:
        return out
    cycles = sliding_window_view(s, p)  # cycles[t] = s[t : t + p] (a view: only the rows used are copied)
    nxt = starts[:, None] + p + np.arange(-shift, shift + 1)[None, :]  # the next cycle at each shift
    corr = np.einsum("jk,jdk->jd", _unit_rows(cycles[starts]), _unit_rows(cycles[nxt]))
    best = np.argmax(corr, axis=1)
    out[4] = float(np.mean(corr.max(axis=1)))
    out[5] = float(np.min(corr.max(axis=1)))
    lengths = p + best - shift
    out[6] = float(np.std(lengths) / np.mean(lengths))
    amp = np.ptp(cycles[starts], axis=1)
    out[7] = float(np.std(amp) / np.mean(amp)) if np.mean(amp) > 0 else np.nan
    return out


def _unit_rows(rows: FloatArray) -> FloatArray:
    centred = rows - rows.mean(axis=-1, keepdims=True)
    norm = np.sqrt(np.einsum("...k,...k->...", centred, centred))
    return centred / np.where(norm > 0, norm, 1.0)[..., None]


def history_features(feats: FloatArray, steps: int = HISTORY_STEPS) -> FloatArray:
    """Standard deviation over the last ``steps`` steps (fewer at the start) of the ``HISTORY`` features."""
    cols = [vf_features.FEATURE_NAMES.index(h) for h in HISTORY]
    v = feats[:, cols]
    out = np.zeros_like(v)
    for i in range(len(v)):
        out[i] = v[max(0, i - steps + 1) : i + 1].std(axis=0)
    return out


def rhythm_labels(path: Path, ends: npt.NDArray[np.int64]) -> npt.NDArray[np.str_]:
    """The annotated rhythm (aux note such as ``(VT``) in force at each step's last sample."""
    import wfdb  # noqa: PLC0415

    ann = wfdb.rdann(str(path), "atr")
    at, notes = [0], ["(N"]
    for sample, aux in zip(ann.sample, ann.aux_note, strict=True):
        note = (aux or "").strip("\x00").strip()
        if note.startswith("("):
            at.append(int(sample))
            notes.append(note)
    pos = np.searchsorted(np.asarray(at), ends - 1, side="right") - 1
    return np.asarray(notes)[pos]


def beats_of(path: Path) -> npt.NDArray[np.int64]:
    """(index, decided index) of every beat the channel hands to its rhythm monitor, streamed in
    100 ms blocks as bench/ecg_vf.py streams it."""
    from gateway.records import SampleBlock  # noqa: PLC0415
    from gateway.signal.ecg_channel import EcgChannel  # noqa: PLC0415

    x, fs = load(path, 0)
    channel = EcgChannel("study")
    step = round(0.1 * fs)

    def block(a: int) -> SampleBlock:
        return SampleBlock("study", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a)

    channel.feed(block(0))
    beats: list[tuple[int, int]] = []
    beat = channel.rhythm.beat

    # The rest of the arguments go through as they come (``qrs_like``): a wrapper that names only
    # these three broke the study with a TypeError once the monitor took a fourth.
    def logged(index: int, energy: float, decided_index: int | None = None, *rest: Any, **kw: Any) -> Any:
        beats.append((index, index if decided_index is None else decided_index))
        return beat(index, energy, decided_index, *rest, **kw)

    channel.rhythm.beat = logged  # type: ignore[method-assign]
    for a in range(step, len(x), step):
        channel.feed(block(a))
    return np.asarray(beats, dtype=np.int64).reshape(-1, 2)


def regular_beats(ends: Any, beats: Any, fs: float, window_s: float, max_rate: float, spread: float) -> Any:
    """At each step end: did at least 3 beats of the last ``window_s`` come at most at ``max_rate``
    /min with (max RR - min RR) within ``spread`` of the median RR (beats decided by then)?"""
    out = np.zeros(len(ends), dtype=bool)
    idx, dec = beats[:, 0], beats[:, 1]
    for j, e in enumerate(ends.tolist()):
        a, z = np.searchsorted(idx, e - round(window_s * fs)), np.searchsorted(idx, e)
        ii = idx[a:z][dec[a:z] <= e]
        if len(ii) < 3:
            continue
        rr = np.diff(ii) / fs
        mid = float(np.median(rr))
        out[j] = mid >= 60.0 / max_rate and float(rr.max() - rr.min()) <= spread * mid
    return out


def auc(pos: FloatArray, neg: FloatArray) -> float:
    pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    if not len(pos) or not len(neg):
        return float("nan")
    from scipy.stats import rankdata  # noqa: PLC0415

    ranks = rankdata(np.concatenate((pos, neg)))  # mid-ranks: ties count one half
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def study_record(path: Path, sweep_cache: Path, feature_cache: Path, context_s: float) -> dict[str, Any]:
    from train_vf_model import step_set  # noqa: PLC0415
    from vf_sweep import SUPPRESS, record_cached  # noqa: PLC0415

    nstdb = path.parent.parent / "nstdb"
    rec = record_cached(path, nstdb, None, None, sweep_cache)
    feats, _, _ = step_set(path, 0, nstdb, None, None, feature_cache)
    steps = rec.prob != SUPPRESS
    ends = rec.ends[steps]
    if len(ends) != len(feats):
        raise SystemExit(f"{path.name}: recording and features disagree; clear the caches")
    x, fs = load(path, 0)
    k = decimation(fs)
    y = SosFilter.design(feature_sos(fs)).run(x)[::k]
    fsd, n = fs / k, round(context_s * fs / k)
    counts = (ends - 1) // k + 1
    ctx = np.asarray([context_features(y[max(0, c - n) : c], fsd) for c in counts.tolist()])
    return {
        "rec": rec,
        "steps": steps,
        "x": np.hstack((ctx, history_features(feats))),
        "label": rhythm_labels(path, ends),
        "beats": beats_of(path),
        "seconds": false_seconds_by_rhythm(path, rec, VfParams()),
    }


def false_seconds_by_rhythm(path: Path, rec: Any, params: VfParams) -> dict[str, list[int]]:
    """Per annotated rhythm: [scored non-VF seconds, of which alarmed], with bench/ecg_vf.py's
    rules (alarm state at each second's end; VF/flutter seconds and the 10 s after an episode left out)."""
    from vf_sweep import replay  # noqa: PLC0415

    sec = round(rec.fs)
    m = rec.n // sec
    on = np.zeros(rec.n, dtype=bool)
    for a, b in replay(rec, params):
        on[a:b] = True
    vf = np.zeros(rec.n, dtype=bool)
    for a, b in rec.truth:
        vf[a : b + int(10.0 * rec.fs)] = True  # the episode and its grace
    scored = ~vf[: m * sec].reshape(m, sec).any(axis=1)
    alarmed = on[: m * sec].reshape(m, sec)[:, -1]
    label = rhythm_labels(path, np.arange(1, m + 1) * sec)
    out: dict[str, list[int]] = {}
    for note, s, a in zip(label.tolist(), scored.tolist(), alarmed.tolist(), strict=True):
        if s:
            row = out.setdefault(note, [0, 0])
            row[0] += 1
            row[1] += int(a)
    return out


def gated(recs: list[dict[str, Any]], keep: list[FloatArray]) -> list[Recording]:
    """Each record's sweep recording with its VF-like steps (``steps``) that ``keep`` refuses made
    VF-free, everything else as recorded."""
    from vf_sweep import Recording  # noqa: PLC0415

    out = []
    for r, kp in zip(recs, keep, strict=True):
        rec, steps = r["rec"], r["steps"]
        prob = rec.prob.copy()
        prob[steps] = np.where(kp, prob[steps], 0.0)
        # The trees' confirmation goes with it: without it the replay is the logistic model's alone.
        out.append(Recording(rec.name, rec.n, rec.fs, rec.truth, rec.ends, prob, rec.organised, rec.confirm))
    return out


def fit_gate(x: FloatArray, y: FloatArray) -> tuple[FloatArray, float]:
    from train_vf_model import fit_logistic  # noqa: PLC0415

    return fit_logistic(x, y)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding vfdb/ and nstdb/")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--context-s", type=float, default=8.0)
    ap.add_argument("--sweep-cache", type=Path, required=True, help="bench/vf_sweep.py --cache folder")
    ap.add_argument("--feature-cache", type=Path, required=True, help="scripts/train_vf_model.py --cache folder")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args(argv)
    from vf_sweep import evaluate  # noqa: PLC0415

    args.sweep_cache.mkdir(parents=True, exist_ok=True)
    args.feature_cache.mkdir(parents=True, exist_ok=True)
    paths = sorted(p.with_suffix("") for p in (args.data / "vfdb").glob("*.hea"))
    n = len(paths)
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        recs = list(
            pool.map(study_record, paths, [args.sweep_cache] * n, [args.feature_cache] * n, [args.context_s] * n)
        )
    params = VfParams()
    names = CONTEXT_NAMES + tuple(f"{h}_sd{HISTORY_STEPS}" for h in HISTORY)
    x = np.vstack([r["x"] for r in recs])
    label = np.concatenate([r["label"] for r in recs])
    flagged = np.concatenate(
        [(r["rec"].prob[r["steps"]] >= params.threshold) & ~r["rec"].organised[r["steps"]] for r in recs]
    )
    vf, vt = np.isin(label, VF_NOTES), label == "(VT"
    other = ~vf & ~vt
    print(f"vfdb lead 0 clean, context {args.context_s:g} s; VF-like steps (p >= {params.threshold}, not vetoed):")
    fv, ft, fo = flagged & vf, flagged & vt, flagged & other
    print(f"  annotated VF/flutter {int(fv.sum())}, VT {int(ft.sum())}, other {int(fo.sum())}")
    print(f"{'measure':>22} {'AUC VF>VT':>9} {'AUC VF>other':>12} {'median VF':>9} {'VT':>7} {'other':>7}")
    for j, name in enumerate(names):
        col = x[:, j]
        print(
            f"{name:>22} {auc(col[fv], col[ft]):9.3f} {auc(col[fv], col[fo]):12.3f} "
            f"{np.nanmedian(col[fv]):9.3f} {np.nanmedian(col[ft]):7.3f} {np.nanmedian(col[fo]):7.3f}"
        )

    def cell(results: list[Recording]) -> str:
        t = evaluate(results, params)
        d = np.asarray(t.delays_s or [np.nan])
        return (
            f"Se_episode {t.se:5.1f} delay median {np.median(d):4.1f} max {np.max(d):5.1f} "
            f"Sp_second {t.sp:6.2f} false_alarm_episodes {t.false_alarms}"
        )

    print(f"shipped detector (no gate):       {cell([r['rec'] for r in recs])}")
    seconds: dict[str, list[int]] = {}
    for r in recs:
        for note, (n_s, n_a) in r["seconds"].items():
            row = seconds.setdefault(note, [0, 0])
            row[0] += n_s
            row[1] += n_a
    scored_s = sum(v[0] for v in seconds.values())
    alarmed_s = sum(v[1] for v in seconds.values())
    print(f"alarmed non-VF seconds by annotated rhythm (of {scored_s} scored, {alarmed_s} alarmed):")
    for note, (n_s, n_a) in sorted(seconds.items(), key=lambda kv: -kv[1][1]):
        print(f"  {note:>7} {n_a:5d} of {n_s:6d} s")
    vt_s, vt_a = seconds.get("(VT", [0, 0])
    print(
        f"Sp_second if no alarm fell on annotated VT: {100.0 * (1 - (alarmed_s - vt_a) / scored_s):.2f} %; "
        f"if annotated VT were not scored at all: {100.0 * (1 - (alarmed_s - vt_a) / (scored_s - vt_s)):.2f} %"
    )
    xs = np.nan_to_num(x)
    mean, scale = xs.mean(axis=0), xs.std(axis=0)
    scale[scale == 0] = 1.0
    z = (xs - mean) / scale
    bounds = np.cumsum([0] + [len(r["label"]) for r in recs])
    fold = np.concatenate([[i % args.folds] * len(r["label"]) for i, r in enumerate(recs)])
    target = vf.astype(np.float64)
    for scheme in ("in-sample", "leave-records-out"):
        gate_p = np.zeros(len(z))
        for k in range(args.folds if scheme != "in-sample" else 1):
            train = flagged & (fold != k) if scheme != "in-sample" else flagged
            w, b = fit_gate(z[train], target[train])
            rows = fold == k if scheme != "in-sample" else np.ones(len(z), dtype=bool)
            gate_p[rows] = 1.0 / (1.0 + np.exp(-np.clip(z[rows] @ w + b, -50, 50)))
        for g in (0.1, 0.2, 0.3, 0.4):
            keep = [gate_p[bounds[i] : bounds[i + 1]] >= g for i in range(len(recs))]
            print(f"gate {scheme:>17} >= {g:.1f}: {cell(gated(recs, keep))}")
    for window_s in (4.0, 6.0):
        for max_rate in (200.0, 250.0, 300.0):
            for spread in (0.1, 0.2, 0.3):
                keep = [
                    ~regular_beats(r["rec"].ends[r["steps"]], r["beats"], r["rec"].fs, window_s, max_rate, spread)
                    for r in recs
                ]
                rule = f"beats regular {window_s:g} s <= {max_rate:g}/min spread {spread:.1f}"
                print(f"{rule}: {cell(gated(recs, keep))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
