"""Does the ECG quality index hold back the beats that noise makes, and only those?

    uv run python bench/ecg_quality.py [--data ../shared/data] [--jobs 2] [--records 100 119 ...]
        [--variants clean "ma 6" bursts ...] [--set max_slope_floor=0.25 short_rr_ratio=0.5 ...] [--per-record]

Each beat the ECG channel publishes (an RR interval reading, released once its quality window is
judged good) is matched to the annotated beats of the MIT-BIH Arrhythmia Database (lead 0, ±150
ms, beat symbols as in ``bench/ecg_accuracy.py``).  A published beat with no annotated beat near
it is a **false beat**: a heart rate and RR interval made up from noise and sent upstream.  The
quality index's job is to hold those back ("no valid ECG") while letting the true beats through.

Variants of every record (noise from the MIT-BIH Noise Stress Test Database, signal power as in
``bench/vf_data.py``):

* ``clean``: the record as recorded (it has noisy stretches of its own).
* ``em``/``ma`` at 12, 6 and 0 dB over the whole record: electrode motion, muscle.
* ``bursts``: 3 s bursts of white Gaussian noise at 0 dB, one every 20 s, their starts moved by
  1.3 s each time so that they fall across the quality windows' boundaries in every way.

Printed per variant: true beats published (share of annotated beats), false beats published
(per hour, and as a share of those published), the share of time the channel held its readings
back (``held``: from a bad window until ``recover_windows`` good ones), the share of time the "no
valid ECG" technical alarm was raised (``invalid``) and how many times it was raised (``spells``,
per hour: each is an alarm raised and cleared, which a technician sees), and for the bursts the
share of bursts the readings were not held back for at all (within the burst and 4 s after it:
``bursts_missed``), and the false beats published within the bursts.  The last line is
``overall quality: clean_invalid_pct=… clean_false_per_h=… clean_spells_per_h=… bursts_missed_pct=…
bursts_false_per_h=… bursts_spells_per_h=… clean_blind_pct=…``.

``--vfdb`` instead runs the records of the MIT-BIH Malignant Ventricular Ectopy Database as
recorded (rhythm annotations only: no beats to score) and prints the "no valid ECG" alarms per
hour and their share of the time, and how many of them ended at a VF or VT onset (the rhythm
read as noise first), and before that the share of each annotated rhythm's time (``(N``, ``(VT``,
``(NOISE`` ... up to the next rhythm note) with the alarm raised, the same over the organised
rhythms (``ORGANISED``: a readable ECG, where the alarm is the index's error) and the five records
with the most of it: ``overall vfdb technical: alarms_per_h=… invalid_pct=… ended_by_vf=…
ended_by_vt=… blind_pct=… blind_long=…``.

``blind`` (both modes) is the share of the time the readings were held back with nothing said
instead: no "no valid ECG" and no rhythm alarm (VF, VT, asystole) on.  A monitor shows no heart
rate there and no alarm, and looks blank; ``blind_long`` counts such spells of 10 s or more.

The channel decides the two apart (``ecg_channel``): readings are held from the first bad window,
while the alarm waits for noise that lasts and clears after a longer run of good windows.  On a
checkout from before that split (no ``EcgChannel.readable``), ``held`` is the alarm's time.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from vf_data import annotated_records, load, mix_noise, noise_record, rhythm_notes  # noqa: E402

from gateway.readings import SampleBlock, Vital  # noqa: E402
from gateway.signal.ecg_channel import EcgChannel, EcgSettings  # noqa: E402
from gateway.signal.ecg_output import ValidityChange  # noqa: E402

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
BURST_S, BURST_EVERY_S, BURST_SHIFT_S, BURST_SNR_DB = 3.0, 20.0, 1.3, 0.0
BLIND_LONG_S = 10.0  # a blind spell this long is counted apart (``blind_spans``)
# Rhythms with a readable, organised ECG: "no valid ECG" raised during them is the index's error
# (or noise the annotators did not mark as such).
ORGANISED = ("(N", "(NSR", "(AFIB", "(BI", "(SVTA", "(NOD", "(B")
VARIANTS = ("clean", "em 12", "em 6", "em 0", "ma 12", "ma 6", "ma 0", "bursts")


@dataclass
class Tally:
    annotated: int = 0
    true_published: int = 0
    false_published: int = 0
    seconds: float = 0.0
    held_s: float = 0.0
    invalid_s: float = 0.0
    spells: int = 0
    blind_s: float = 0.0
    blind_long: int = 0
    bursts: int = 0
    bursts_missed: int = 0
    burst_false: int = 0

    def add(self, o: Tally) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(o, k))

    def line(self, tag: str) -> str:
        pub = self.true_published + self.false_published
        hours = self.seconds / 3600.0
        s = (
            f"{tag:8s} true_published={100.0 * self.true_published / max(1, self.annotated):5.1f}% "
            f"false={self.false_published:5d} ({self.false_published / hours:6.1f}/h, "
            f"{100.0 * self.false_published / max(1, pub):5.2f}% of published) "
            f"held={100.0 * self.held_s / max(1e-9, self.seconds):5.2f}% "
            f"invalid={100.0 * self.invalid_s / max(1e-9, self.seconds):5.2f}% "
            f"spells={self.spells / hours:5.1f}/h "
            f"blind={100.0 * self.blind_s / max(1e-9, self.seconds):5.2f}% ({self.blind_long} >= {BLIND_LONG_S:g} s)"
        )
        if self.bursts:
            s += (
                f" bursts_missed={self.bursts_missed}/{self.bursts} "
                f"({100.0 * self.bursts_missed / self.bursts:.1f}%) burst_false={self.burst_false}"
            )
        return s


def bursts(n: int, fs: float) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    k = 0
    while True:
        start = (k + 1) * BURST_EVERY_S + (k * BURST_SHIFT_S) % 4.0
        a, b = round(start * fs), round((start + BURST_S) * fs)
        if b > n:
            return out
        out.append((a, b))
        k += 1


def with_bursts(x: FloatArray, fs: float, spans: list[tuple[int, int]]) -> FloatArray:
    # White noise of the signal's power (0 dB), only where the bursts are.
    white = np.random.default_rng(7).standard_normal(len(x))
    mask = np.zeros(len(x))
    for a, b in spans:
        mask[a:b] = 1.0
    return mix_noise(x, fs, white, BURST_SNR_DB) * mask + x * (1.0 - mask)


Changes = list[tuple[float, bool]]
Spans = list[tuple[float, float]]


def run_channel(
    x: FloatArray, fs: float, settings: EcgSettings
) -> tuple[IntArray, list[ValidityChange], Changes, Changes]:
    """(sample indices of the beats published, "no valid ECG" changes, readability changes as
    (seconds, readable), and changes of "any rhythm alarm on" as (seconds, none on))."""
    channel = EcgChannel("bench", settings)
    step = round(0.1 * fs)
    beats: list[int] = []
    changes: list[ValidityChange] = []
    readable: Changes = []
    rhythm: Changes = []
    on: set[str] = set()
    was = True
    for a in range(0, len(x), step):
        out = channel.feed(SampleBlock("bench", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a))
        beats += [round(r.time * fs) for r in out.readings if r.vital is Vital.RR_INTERVAL]
        changes += out.changes
        for e in out.rhythm:
            before = bool(on)
            (on.add if e.active else on.discard)(e.condition)
            if bool(on) != before:
                rhythm.append((e.time, not on))
        now = getattr(channel, "readable", channel.valid)
        if now != was:  # the time of the window end that changed it, or of the block (recovery)
            readable.append(
                (out.unreadable[0] if not now and getattr(out, "unreadable", None) else (a + step) / fs, now)
            )
            was = now
    return np.asarray(beats, dtype=np.int64), changes, readable, rhythm


def blind_spans(held: Spans, invalid: Spans, rhythm: Spans, end_s: float) -> Spans:
    """Where the readings are held back and nothing says why: no "no valid ECG", no rhythm alarm
    (on a 0.1 s grid).  A monitor there shows no heart rate and no alarm: it looks blank."""
    grid = np.zeros(round(end_s * 10.0) + 1, dtype=bool)
    for a, b in held:
        grid[round(a * 10.0) : round(b * 10.0)] = True
    for a, b in invalid + rhythm:
        grid[round(a * 10.0) : round(b * 10.0)] = False
    edges = np.flatnonzero(np.diff(np.concatenate(([0], grid.view(np.int8), [0]))))
    return [(a / 10.0, b / 10.0) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def invalid_spans(changes: list[tuple[float, bool]], end_s: float) -> list[tuple[float, float]]:
    spans, start = [], None
    for t, valid in changes:
        if not valid and start is None:
            start = t
        elif valid and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, end_s))
    return spans


def evaluate(job: tuple[Path, Path, str, EcgSettings]) -> tuple[str, str, Tally]:
    import wfdb  # noqa: PLC0415

    path, nstdb, variant, settings = job
    x, fs = load(path, 0)
    n = len(x)
    spans: list[tuple[int, int]] = []
    if variant == "bursts":
        spans = bursts(n, fs)
        x = with_bursts(x, fs, spans)
    elif variant != "clean":
        name, snr = variant.split()
        x = mix_noise(x, fs, noise_record(nstdb, name, fs, n), float(snr))
    ann = wfdb.rdann(str(path), "atr")
    ref = np.asarray([s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in BEAT_SYMBOLS])
    beats, changes, readable, rhythm = run_channel(x, fs, settings)
    tol = round(0.15 * fs)
    near = np.zeros(len(beats), dtype=bool)
    if len(ref) and len(beats):
        pos = np.searchsorted(ref, beats)
        left = np.abs(beats - ref[np.clip(pos - 1, 0, len(ref) - 1)])
        right = np.abs(ref[np.clip(pos, 0, len(ref) - 1)] - beats)
        near = np.minimum(left, right) <= tol
    t = Tally(annotated=len(ref), true_published=int(near.sum()), false_published=int((~near).sum()), seconds=n / fs)
    inv = invalid_spans([(c.time, c.valid) for c in changes], n / fs)
    held = invalid_spans(readable, n / fs)
    t.invalid_s = sum(b - a for a, b in inv)
    t.held_s = sum(b - a for a, b in held)
    t.spells = len(inv)
    blind = blind_spans(held, inv, invalid_spans(rhythm, n / fs), n / fs)
    t.blind_s = sum(b - a for a, b in blind)
    t.blind_long = sum(b - a >= BLIND_LONG_S for a, b in blind)
    for a, b in spans:
        t.bursts += 1
        lo, hi = a / fs, b / fs + 4.0
        t.bursts_missed += not any(s < hi and e > lo for s, e in held)
        t.burst_false += int(((beats >= a) & (beats < b) & ~near).sum())
    return path.name, variant, t


def by_rhythm(
    notes: list[tuple[float, str]], spans: list[tuple[float, float]], end_s: float
) -> dict[str, tuple[float, float]]:
    """{rhythm note: (seconds annotated, seconds of them with "no valid ECG" raised)}; ``notes``
    as (seconds, note) in order, each rhythm running to the next note (the first one from 0 s:
    the records start with one)."""
    out: dict[str, tuple[float, float]] = {}
    for k, (start, note) in enumerate(notes):
        stop = notes[k + 1][0] if k + 1 < len(notes) else end_s
        if stop <= start:
            continue
        raised = sum(max(0.0, min(b, stop) - max(a, start)) for a, b in spans)
        seconds, invalid = out.get(note, (0.0, 0.0))
        out[note] = (seconds + stop - start, invalid + raised)
    return out


def technical_alarms(
    job: tuple[Path, EcgSettings],
) -> tuple[float, int, float, Counter[str], dict[str, tuple[float, float]], Spans]:
    """(seconds, alarms raised, seconds raised, clears by their detail, ``by_rhythm``, blind
    spans) of one record as recorded."""
    path, settings = job
    x, fs = load(path, 0)
    _, changes, readable, rhythm = run_channel(x, fs, settings)
    ended = Counter(c.detail for c in changes if c.valid)
    end_s = len(x) / fs
    spans = invalid_spans([(c.time, c.valid) for c in changes], end_s)
    blind = blind_spans(invalid_spans(readable, end_s), spans, invalid_spans(rhythm, end_s), end_s)
    notes = [(sample / fs, note) for sample, note in rhythm_notes(path)]
    return end_s, len(spans), sum(b - a for a, b in spans), ended, by_rhythm(notes, spans, end_s), blind


def vfdb_main(data: Path, records: list[str] | None, settings: EcgSettings, jobs: int) -> int:
    paths = annotated_records(data / "vfdb", records)
    if not paths:
        raise SystemExit(f"no annotated WFDB records in {data / 'vfdb'}")
    with ProcessPoolExecutor(jobs) as pool:
        results = list(pool.map(technical_alarms, [(p, settings) for p in paths]))
    seconds = sum(r[0] for r in results)
    raised = sum(r[1] for r in results)
    invalid = sum(r[2] for r in results)
    ended: Counter[str] = Counter()
    rhythms: dict[str, tuple[float, float]] = {}
    for r in results:
        ended.update(r[3])
        for note, (s, inv) in r[4].items():
            s0, inv0 = rhythms.get(note, (0.0, 0.0))
            rhythms[note] = (s0 + s, inv0 + inv)
    print(f"records: {len(paths)} vfdb, lead 0, {seconds / 3600.0:.1f} h; alarms ended by: {dict(ended)}")
    print("no valid ECG by annotated rhythm (share of its time raised):")
    for note, (s, inv) in sorted(rhythms.items(), key=lambda kv: -kv[1][0]):
        print(f"  {note:8s} {100.0 * inv / s:5.1f}% of {s:7.0f} s")
    organised = [rhythms.get(note, (0.0, 0.0)) for note in ORGANISED]
    org_s, org_inv = sum(s for s, _ in organised), sum(inv for _, inv in organised)
    worst = sorted(
        (
            (sum(inv for note, (_, inv) in r[4].items() if note in ORGANISED), p.name)
            for p, r in zip(paths, results, strict=True)
        ),
        reverse=True,
    )[:5]
    print(
        f"organised rhythms ({' '.join(ORGANISED)}): {100.0 * org_inv / max(1e-9, org_s):.1f}% "
        f"of {org_s:.0f} s raised; most in records {', '.join(f'{name} ({inv:.0f} s)' for inv, name in worst)}"
    )
    blind = [b - a for r in results for a, b in r[5]]
    longest = sorted(((b - a, a, p.name) for p, r in zip(paths, results, strict=True) for a, b in r[5]), reverse=True)
    print(
        f"blind (readings held, nothing said): {100.0 * sum(blind) / seconds:.2f}% of the time, "
        f"{sum(b >= BLIND_LONG_S for b in blind)} spells >= {BLIND_LONG_S:g} s; longest "
        + ", ".join(f"{name} at {a:.0f} s ({d:.0f} s)" for d, a, name in longest[:5])
    )
    print(
        f"overall vfdb technical: alarms_per_h={raised / (seconds / 3600.0):.1f} "
        f"invalid_pct={100.0 * invalid / seconds:.2f} ended_by_vf={ended.get('ventricular_fibrillation', 0)} "
        f"ended_by_vt={ended.get('ventricular_tachycardia', 0)} blind_pct={100.0 * sum(blind) / seconds:.2f} "
        f"blind_long={sum(b >= BLIND_LONG_S for b in blind)}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--records", nargs="*")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--per-record", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="EcgSettings to change")
    ap.add_argument("--vfdb", action="store_true", help="the technical alarm on vfdb as recorded (docstring)")
    args = ap.parse_args(argv)
    defaults = EcgSettings()
    overrides: dict[str, Any] = {
        k: int(v) if isinstance(getattr(defaults, k), int) else float(v)
        for k, v in (item.split("=", 1) for item in args.set)
    }
    settings = replace(defaults, **overrides)
    if args.vfdb:
        return vfdb_main(args.data, args.records, settings, args.jobs)
    paths = annotated_records(args.data / "mitdb", args.records)
    if not paths:
        ap.error(f"no annotated WFDB records in {args.data / 'mitdb'} (--data names the folder that holds mitdb/)")
    jobs = [(p, args.data / "nstdb", v, settings) for v in args.variants for p in paths]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(evaluate, jobs))
    totals = {v: Tally() for v in args.variants}
    for name, variant, t in results:
        totals[variant].add(t)
        if args.per_record:
            print(t.line(f"{name} {variant}"))
    print(f"records: {len(paths)} mitdb, lead 0")
    for v in args.variants:
        print(totals[v].line(v))
    clean, burst = totals.get("clean", Tally()), totals.get("bursts", Tally())
    print(
        "overall quality: "
        f"clean_invalid_pct={100.0 * clean.invalid_s / max(1e-9, clean.seconds):.2f} "
        f"clean_false_per_h={clean.false_published / max(1e-9, clean.seconds / 3600.0):.1f} "
        f"clean_spells_per_h={clean.spells / max(1e-9, clean.seconds / 3600.0):.1f} "
        f"bursts_missed_pct={100.0 * burst.bursts_missed / max(1, burst.bursts):.1f} "
        f"bursts_false_per_h={burst.false_published / max(1e-9, burst.seconds / 3600.0):.1f} "
        f"bursts_spells_per_h={burst.spells / max(1e-9, burst.seconds / 3600.0):.1f} "
        f"clean_blind_pct={100.0 * clean.blind_s / max(1e-9, clean.seconds):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
