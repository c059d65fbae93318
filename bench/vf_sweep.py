"""Trade-off table of the VF/flutter operating point: step threshold and episode hysteresis.

    uv run python bench/vf_sweep.py [--data ../shared/data] [--jobs N] [--snr 6 0]
        [--threshold 0.75 0.8 ...] [--raise 5/6 6/8 ...] [--clear 6 8 10]

Each vfdb record (lead 0; clean and mixed with channel 0 of nstdb ``em`` at each ``--snr``, as
``bench/ecg_vf.py`` mixes it) and each mitdb record is streamed once through the whole ECG channel.
Every VF step is recorded — its model probability, the trees' confirming probability and whether the
organised-rhythm veto held —
together with the quality index's suppressions, in the order the channel made them.  Each operating
point is then replayed with ``VfDetector.decide`` (the detector's own hysteresis, so the alarms are
those the channel would raise with these parameters) and scored exactly as ``bench/ecg_vf.py``
scores them.  The model is not retrained: this sweeps the decision, not the features.

One line per operating point: vfdb clean, then each noise level
(Se_episode / delay median and max / Sp_second / false alarm episodes), then the false alarm
episodes on mitdb (clean and the same noise levels together).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ecg_vf import MIN_EPISODE_S, RecordScore, score
from vf_data import load, mix_noise, noise_record, vf_intervals

from gateway.records import SampleBlock
from gateway.signal.ecg_channel import EcgChannel
from gateway.signal.vf_detector import VfDetector, VfOutput, VfParams

if TYPE_CHECKING:
    import numpy.typing as npt

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SUPPRESS = -1.0  # probability slot marking a quality suppression in the event list


@dataclass
class Recording:
    """One record variant: events (end index, probability or SUPPRESS, organised, the trees'
    confirmation) in channel order.  Without ``confirm`` a step needs only the probability (a
    replay of another step rule, made VF-like by a probability of 1)."""

    name: str
    n: int
    fs: float
    truth: list[tuple[int, int]]
    ends: npt.NDArray[np.int64]
    prob: npt.NDArray[np.float64]
    organised: npt.NDArray[np.bool_]
    confirm: npt.NDArray[np.float64] | None = None


def record(path: Path, nstdb: Path, noise: str | None, snr: float | None, block_s: float = 0.1) -> Recording:
    x, fs = load(path, 0)
    if noise is not None and snr is not None:
        x = mix_noise(x, fs, noise_record(nstdb, noise, fs, len(x), channel=0), snr)
    channel = EcgChannel("sweep")
    step = max(1, round(block_s * fs))

    def block(a: int) -> SampleBlock:
        return SampleBlock("sweep", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a)

    # The channel builds its rhythm monitor on the first block (which is shorter than any VF window
    # or quality window, so nothing is decided in it); the logging wraps go on after that.
    channel.feed(block(0))
    vf = channel.rhythm.vf
    vf.check_every_step = True  # the veto of every step, so that lower thresholds replay exactly too
    events: list[tuple[int, float, bool, float]] = []
    feed, suppress = vf.feed, vf.suppress

    def feed_logged(samples: Any, organised: Any = None, artefact: Any = None) -> VfOutput:
        out = feed(samples, organised, artefact)
        # The native-rhythm veto (``native_rhythm``) acts as the organised-rhythm veto does.
        events.extend((s.end_index, s.probability, s.organised or s.artefact, s.confirmation) for s in out.steps)
        return out

    def suppress_logged(end_index: int) -> Any:
        events.append((end_index, SUPPRESS, False, np.nan))
        return suppress(end_index)

    vf.feed = feed_logged  # type: ignore[method-assign,assignment]
    vf.suppress = suppress_logged  # type: ignore[method-assign]
    for a in range(step, len(x), step):
        channel.feed(block(a))
    e = np.asarray(events, dtype=np.float64).reshape(-1, 4)
    ends, prob, org = e[:, 0].astype(np.int64), e[:, 1], e[:, 2].astype(bool)
    return Recording(path.name, len(x), fs, vf_intervals(path, len(x)), ends, prob, org, e[:, 3])


def record_cached(path: Path, nstdb: Path, noise: str | None, snr: float | None, cache: Path | None) -> Recording:
    """``record``, kept in ``cache`` (one .npz per record variant) when given: the recording depends
    on the code of the ECG channel and the model, so clear the folder after changing either."""
    f = None if cache is None else cache / f"{path.parent.name}_{path.name}_{noise}_{snr}.npz"
    if f is not None and f.exists():
        d = np.load(f)
        if "confirm" in d:  # else recorded before the trees: record again
            ends, prob, org, conf = d["ends"], d["prob"], d["organised"], d["confirm"]
            truth = vf_intervals(path, int(d["n"]))
            return Recording(path.name, int(d["n"]), float(d["fs"]), truth, ends, prob, org, conf)
    r = record(path, nstdb, noise, snr)
    if f is not None:
        np.savez(f, ends=r.ends, prob=r.prob, organised=r.organised, confirm=r.confirm, n=r.n, fs=r.fs)
    return r


def replay(rec: Recording, params: VfParams) -> list[tuple[int, int]]:
    """The alarm intervals the channel would have raised with ``params`` (same steps, same vetoes)."""
    det = VfDetector(rec.fs, params)
    out: list[tuple[int, int]] = []
    start: int | None = None
    confirm = np.ones(len(rec.ends)) if rec.confirm is None else rec.confirm
    events = zip(rec.ends.tolist(), rec.prob.tolist(), rec.organised.tolist(), confirm.tolist(), strict=True)
    for end, prob, organised, conf in events:
        if prob == SUPPRESS:
            changes = det.suppress(end)
        else:
            vf_like = prob >= params.threshold and conf >= params.confirm_threshold and not organised
            c = det.decide(end, vf_like)
            changes = [] if c is None else [c]
        for c in changes:
            if c.active:
                start = c.index
            elif start is not None:
                out.append((start, c.index))
                start = None
    if start is not None:
        out.append((start, rec.n))
    return out


def evaluate(recs: list[Recording], params: VfParams) -> RecordScore:
    total = RecordScore("overall")
    for r in recs:
        total.add(score(r.name, r.n, r.fs, r.truth, replay(r, params), 4.0, 10.0))
    return total


def _cell(s: RecordScore) -> str:
    d = np.asarray(s.delays_s) if s.delays_s else np.asarray([np.nan])
    return f"{s.se:5.1f} {np.median(d):4.1f} {np.max(d):5.1f} {s.sp:6.2f} {s.false_alarms:3d}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding vfdb/, mitdb/ and nstdb/")
    ap.add_argument("--noise", default="em")
    ap.add_argument("--snr", type=float, nargs="*", default=[6.0, 0.0])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threshold", type=float, nargs="*", default=[0.75, 0.8, 0.85])
    ap.add_argument("--raise", dest="raise_", nargs="*", default=["5/6", "6/7", "6/8", "7/8", "7/10"])
    ap.add_argument("--clear", type=int, nargs="*", default=[6, 8, 10])
    ap.add_argument("--no-mitdb", action="store_true", help="skip the false alarm count on mitdb")
    ap.add_argument("--cache", type=Path, help="keep the recordings here (clear it after changing the code)")
    args = ap.parse_args(argv)
    nstdb = args.data / "nstdb"
    levels: list[tuple[str | None, float | None]] = [(None, None)] + [(args.noise, s) for s in args.snr]
    dbs = ["vfdb"] + ([] if args.no_mitdb else ["mitdb"])
    jobs = []
    for db in dbs:
        paths = sorted(p.with_suffix("") for p in (args.data / db).glob("*.hea") if p.with_suffix(".atr").exists())
        jobs += [(db, lvl, p) for lvl in levels for p in paths]
    if not jobs:
        print(f"no annotated records under {args.data}", file=sys.stderr)
        return 2
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        noises, snrs = zip(*[j[1] for j in jobs], strict=True)
        if args.cache is not None:
            args.cache.mkdir(parents=True, exist_ok=True)
        paths, n = [j[2] for j in jobs], len(jobs)
        recs = list(pool.map(record_cached, paths, [nstdb] * n, noises, snrs, [args.cache] * n))
    sets: dict[tuple[str, str | None, float | None], list[Recording]] = {}
    for (db, (noise, snr), _), r in zip(jobs, recs, strict=True):
        sets.setdefault((db, noise, snr), []).append(r)
    labels = ["clean" if n is None else f"{n} {s:g} dB" for n, s in levels]
    print(
        f"vfdb lead 0; episodes >= {MIN_EPISODE_S:g} s; each cell: Se_episode % / delay median s / max s / "
        "Sp_second % / false alarm episodes"
    )
    print(
        f"{'thr':>5} {'raise':>5} {'clear':>5} | "
        + " | ".join(f"{lb:^27}" for lb in labels)
        + ("" if args.no_mitdb else " | mitdb FA")
    )
    base = VfParams()
    for thr in args.threshold:
        for kn in args.raise_:
            k, n = (int(v) for v in kn.split("/"))
            for c in args.clear:
                p = replace(base, threshold=thr, raise_steps=k, raise_of=n, clear_steps=c)
                cells = [_cell(evaluate(sets[("vfdb", *lvl)], p)) for lvl in levels]
                mit = ""
                if not args.no_mitdb:
                    mit = f" | {sum(evaluate(sets[('mitdb', *lvl)], p).false_alarms for lvl in levels):9d}"
                shipped = (thr, k, n, c) == (base.threshold, base.raise_steps, base.raise_of, base.clear_steps)
                mark = " *" if shipped else ""
                print(f"{thr:5.2f} {kn:>5} {c:5d} | " + " | ".join(cells) + mit + mark, flush=True)
    print("* shipped operating point (VfParams defaults)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
