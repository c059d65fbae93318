"""Asystole alarms: how soon after the last beat, how soon they end, and how often they flap.

    uv run python bench/ecg_asystole.py [--data ../shared/data] [--jobs 2] [--records 100 119 ...]
        [--fs 130]          (the records resampled to a device's rate)
        [--lose 0.02]       (a share of the 100 ms blocks lost: gaps)
        [--clear-beats N]   (the QRS in a row that end an episode; 1 is how it was before c094dab)
        [--lead N]          (the records' lead, 0 by default; the annotations are the same)
        [--paced-after-ms MS]  (how far after a paced or paced-fusion beat the cut goes, 170 by default)

Three sets, each through the ECG channel the daemon runs (``gateway.signal.ecg_channel``, lead 0
unless ``--lead``, 100 ms blocks):

* **Synthetic standstill** on the 24 MIT-BIH Arrhythmia records: the annotated QRS complexes cut
  out (a straight line from 60 ms before each to 80 ms after, 170 ms after a paced one; P and T
  waves and baseline kept)
  for ``--standstill-s`` (30 s) at five places in each record; each run starts 60 s before and
  ends 40 s after.  Printed: the raise delay from the last beat before (the issue's target is
  <= 10 s), the clear delay from the first beat after, missed standstills, standstills with
  more than one raise (the alarm flapping), and standstills whose alarm cleared more than 0.5 s
  before that beat: with no other alarm on (``early_clears``: P or flutter waves taken for a
  rhythm, the standstill called over while it goes on), or ended by a VF or VT alarm raised in
  the standstill (a lethal-rhythm alarm still on, under the wrong name); and standstills during
  whose alarm a heart rate above the silence's (``SILENCE_MAX``) or an RR interval came out for a
  beat timed within it, read from the waves left (107 of 120 before 4dc5adf, 0 since), and
  standstills with an RR interval out for a beat between the last QRS and the raise.  80 ms does not reach
  the end of a paced complex: in 102 and 104 the paced QRS goes on to about 170 ms after its
  annotation (V2, and V5 of 104), so their standstills keep the second half of every paced
  complex at the pacing rate, a ventricular deflection of 0.3-0.65 of the QRS's slope energy that
  the channel rightly counts as beats: that was no standstill.  So paced (``/``) and
  paced-fusion (``f``) beats are cut to 170 ms after (``--paced-after-ms``; 80 gives the cut used
  before, and the figures printed before, back).  The T waves stay, though a heart in standstill
  makes none: a harder test of the asystole rules, which must not take them for QRS, but in 4
  standstills (116 twice, 202, 230) the VF detector scores them as VF.  ``--t-waves`` cuts each
  complex to the end of its T wave as well (an upper-normal QT for the rhythm's RR, ending 250
  ms before the next complex, whose P wave stays).
* **No standstill**: the same records whole, clean and with electrode-motion noise at 6 dB
  (``bench/vf_data.py``'s mixing): every asystole alarm there is false, since no record has a
  pause as long as the alarm's 6 s.
* **Annotated asystole** in the MIT-BIH Malignant Ventricular Ectopy Database (``(ASYS`` rhythm
  notes, episodes of 8 s or more): raised or not, the delay from the annotated onset, and how many
  times the alarm was raised during the episode (1 is what a clinician wants to see).

The last line is
``overall asystole: standstills=N detected=N delay_median_s=S delay_max_s=S clear_median_s=S
early_clears=N flapping=N false_alarms=N vfdb_episodes=N vfdb_detected=N vfdb_raises=N``.
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

from vf_data import annotated_records, annotations, block_starts, load, mix_noise, noise_record, rhythm_notes  # noqa: E402

from gateway.readings import SampleBlock, Vital  # noqa: E402
from gateway.signal.ecg_channel import EcgChannel, EcgSettings  # noqa: E402
from gateway.signal.ecg_rhythm import ASYSTOLE, RhythmSettings  # noqa: E402

FloatArray = npt.NDArray[np.float64]
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
PACED_SYMBOLS = frozenset("/f")
PLACES = 5
BEFORE_S, AFTER_S = 60.0, 40.0
MIN_EPISODE_S = 8.0
TARGET_S = 10.0  # the raise delay target
# The most a standstill's silence reads as (``heart_rate.silence_rate``: 60 / s without a beat, given
# after 3 s at the latest); a higher rate during the alarm was read from waves.
SILENCE_MAX = 20.0
MATCH_S = 0.15  # a detected beat this close to an annotated one is that beat (bench/ecg_accuracy.py)
EARLY_S = 0.5  # a clear this long before the first returning beat is early (its time rounded aside)


@dataclass
class Tally:
    standstills: int = 0
    detected: int = 0
    delays: list[float] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    # Cleared before the first returning beat (by how long): the standstill called over while it
    # goes on, with no other alarm; or ended by a VF or VT alarm raised in it (``to_lethal``).
    early_clears: list[float] = field(default_factory=list)
    to_lethal: int = 0
    flapping: int = 0
    false_alarms: int = 0
    hours: float = 0.0
    vfdb_episodes: int = 0
    vfdb_detected: int = 0
    vfdb_raises: int = 0
    vfdb_delays: list[float] = field(default_factory=list)
    # Standstills during whose alarm a rate above the silence's (``SILENCE_MAX``) or an RR interval
    # came out: read from P, T or flutter waves, a rate the alarm says there is not.
    rated: int = 0
    # Standstills with an RR interval out for a beat timed after the last QRS and before the raise
    # (or the rhythm's return, if none): P, T or flutter waves taken for beats (19 of 120 before
    # the readings of beats not counted as QRS waited for the next QRS, 4 since: waves counted).
    rr_before: int = 0

    def add(self, o: Tally) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(o, k))


def asystole_events(
    x: FloatArray,
    fs: float,
    settings: EcgSettings,
    lose: float = 0.0,
    lethal: list[tuple[float, bool]] | None = None,
    rates: list[tuple[float, float]] | None = None,
) -> list[tuple[float, bool]]:
    """(seconds from the start of ``x``, raised?) of every asystole change; each 100 ms block
    lost with probability ``lose`` (a link that drops frames: the channel sees a gap).  Into
    ``lethal``: whether a VF or VT alarm is on, at each change of that; into ``rates``, each heart
    rate (/min) and RR interval (as -ms) that came out, with the time of its beat."""
    channel = EcgChannel("bench", settings)
    step = round(0.1 * fs)
    out: list[tuple[float, bool]] = []
    on: set[str] = set()
    for a in block_starts(len(x), step, lose, len(x)):
        got = channel.feed(SampleBlock("bench", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a))
        if rates is not None:
            rates.extend(
                (r.time, r.value if r.vital is Vital.HEART_RATE else -r.value)
                for r in got.readings
                if r.value is not None and r.vital in (Vital.HEART_RATE, Vital.RR_INTERVAL)
            )
        for e in got.rhythm:
            if e.condition == ASYSTOLE:
                out.append((e.time, e.active))
            elif lethal is not None:
                before = bool(on)
                (on.add if e.active else on.discard)(e.condition)
                if bool(on) != before:
                    lethal.append((e.time, bool(on)))
    return out


def on_at(changes: list[tuple[float, bool]], t: float) -> bool:
    """Whether an alarm is on at ``t``, from its ``changes`` (time, raised?) in order: raised at ``t``
    counts, cleared at ``t`` does not (the beat that clears asystole has the clear's time, and its
    rate is the rhythm's that is back).  Of the VF or VT alarm, or of asystole."""
    state = False
    for when, on in changes:
        if when > t:
            break
        state = on
    return state


def beats(path: Path, symbols: frozenset[str] = BEAT_SYMBOLS, fs: float | None = None) -> npt.NDArray[np.int64]:
    samples, syms, _ = annotations(path, fs)
    return np.asarray([s for s, sym in zip(samples, syms, strict=True) if sym in symbols], dtype=np.int64)


def cut_qrs(
    x: FloatArray,
    fs: float,
    qrs: npt.NDArray[np.int64],
    paced: frozenset[int],
    offset: int,
    paced_after_s: float,
    t_waves: bool = False,
) -> FloatArray:
    """A copy of ``x`` with each complex at ``qrs`` (indices into ``x``) replaced by a straight line
    from 60 ms before it to 80 ms after, or ``paced_after_s`` after a paced one (``paced`` holds
    their indices into the record, ``x`` starting at ``offset``); with ``t_waves``, to the end of
    its T wave."""
    y = x.copy()
    # A heart in standstill makes no T waves either.  The end of the T wave, by the rhythm's RR:
    # an upper-normal QT (QTc 0.42 s, Bazett) and 40 ms, but ending 250 ms before the next
    # complex, whose P wave stays.
    rr = float(np.median(np.diff(qrs))) / fs if t_waves and len(qrs) > 1 else 1.0
    t_end = min(0.42 * np.sqrt(rr) + 0.04, rr - 0.25) if t_waves else 0.0
    for r in qrs:
        after = max(paced_after_s if int(r) + offset in paced else 0.08, t_end)
        u, v = int(r - 0.06 * fs), int(r + after * fs)
        if u >= 0 and v < len(y):
            y[u:v] = np.linspace(y[u], y[v], v - u)
    return y


def standstill(
    path: Path,
    lead: int,
    standstill_s: float,
    settings: EcgSettings,
    paced_after_s: float = 0.08,
    rate: float | None = None,
    lose: float = 0.0,
    t_waves: bool = False,
) -> Tally:
    x, fs = load(path, lead, rate)
    qrs = beats(path, fs=rate)
    paced = frozenset(beats(path, PACED_SYMBOLS, rate).tolist())
    t = Tally()
    span = len(x) / fs
    for k in range(PLACES):
        start_s = BEFORE_S + (k + 0.5) * (span - BEFORE_S - AFTER_S - standstill_s) / PLACES
        a, b = round((start_s - BEFORE_S) * fs), round((start_s + standstill_s + AFTER_S) * fs)
        lo, hi = round(start_s * fs), round((start_s + standstill_s) * fs)
        y = cut_qrs(x[a:b], fs, qrs[(qrs > lo) & (qrs < hi)] - a, paced, a, paced_after_s, t_waves)
        last = qrs[qrs <= lo]
        after = qrs[qrs >= hi]
        if not len(last) or not len(after):
            continue
        last_s, back_s = (int(last[-1]) - a) / fs, (int(after[0]) - a) / fs
        lethal: list[tuple[float, bool]] = []
        rates: list[tuple[float, float]] = []
        events = asystole_events(y, fs, settings, lose, lethal, rates)
        raises = [s for s, on in events if on and last_s < s <= back_s + 1.0]
        t.standstills += 1
        t.rated += any(r < 0 or r > SILENCE_MAX for when, r in rates if on_at(events, when))
        # a beat timed within MATCH_S of an annotated one is that QRS
        until = raises[0] if raises else back_s - MATCH_S
        t.rr_before += any(r < 0 and last_s + MATCH_S < when < until for when, r in rates)
        if raises:
            t.detected += 1
            t.delays.append(raises[0] - last_s)
            t.flapping += len(raises) > 1
            clears = [s for s, on in events if not on and s >= raises[0]]
            if clears:
                t.clears.append(clears[0] - back_s)
                if clears[0] < back_s - EARLY_S:
                    if on_at(lethal, clears[0]):
                        t.to_lethal += 1
                    else:
                        t.early_clears.append(back_s - clears[0])
    return t


def no_standstill(
    path: Path,
    lead: int,
    nstdb: Path,
    noise: str | None,
    settings: EcgSettings,
    rate: float | None = None,
    lose: float = 0.0,
) -> Tally:
    x, fs = load(path, lead, rate)
    if noise is not None:
        x = mix_noise(x, fs, noise_record(nstdb, noise, fs, len(x)), 6.0)
    events = asystole_events(x, fs, settings, lose)
    return Tally(false_alarms=sum(on for _, on in events), hours=len(x) / fs / 3600.0)


def vfdb(path: Path, lead: int, settings: EcgSettings, rate: float | None = None, lose: float = 0.0) -> Tally:
    x, fs = load(path, lead, rate)
    notes = rhythm_notes(path, rate)
    events = asystole_events(x, fs, settings, lose)
    t = Tally()
    for (start, note), nxt in zip(notes, [*notes[1:], (len(x), "")], strict=True):
        if note != "(ASYS" or (nxt[0] - start) / fs < MIN_EPISODE_S:
            continue
        lo, hi = start / fs, nxt[0] / fs
        raises = [s for s, on in events if on and lo <= s <= hi]
        t.vfdb_episodes += 1
        t.vfdb_raises += len(raises)
        if raises:
            t.vfdb_detected += 1
            t.vfdb_delays.append(raises[0] - lo)
    return t


def job(
    args: tuple[str, Path, int, Path, float, EcgSettings, float, float | None, float, bool],
) -> tuple[str, str, Tally]:
    kind, path, lead, nstdb, standstill_s, settings, paced_after_s, rate, lose, t_waves = args
    if kind == "standstill":
        return kind, path.name, standstill(path, lead, standstill_s, settings, paced_after_s, rate, lose, t_waves)
    if kind == "vfdb":
        return kind, path.name, vfdb(path, lead, settings, rate, lose)
    noise = None if kind == "clean" else "em"
    return kind, path.name, no_standstill(path, lead, nstdb, noise, settings, rate, lose)


def _median(v: list[float]) -> float:
    return statistics.median(v) if v else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--records", nargs="*")
    ap.add_argument("--standstill-s", type=float, default=30.0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--clear-beats", type=int)
    ap.add_argument("--lead", type=int, default=0)
    ap.add_argument("--paced-after-ms", type=float, default=170.0)
    ap.add_argument(
        "--fs", type=float, help="resample the records (and their annotations) to a device's rate, e.g. 130"
    )
    ap.add_argument("--lose", type=float, default=0.0, help="share of the 100 ms blocks lost, at random (gaps)")
    ap.add_argument("--t-waves", action="store_true", help="cut each complex's T wave out too (standstills)")
    args = ap.parse_args(argv)
    mitdb = annotated_records(args.data / "mitdb", args.records)
    vf = [p.with_suffix("") for p in sorted((args.data / "vfdb").glob("*.hea"))]
    nstdb = args.data / "nstdb"
    rhythm = RhythmSettings() if args.clear_beats is None else RhythmSettings(clear_beats=args.clear_beats)
    cfg = EcgSettings(rhythm=rhythm)
    lead = args.lead
    paced = args.paced_after_ms / 1000.0
    jobs = [
        ("standstill", p, lead, nstdb, args.standstill_s, cfg, paced, args.fs, args.lose, args.t_waves) for p in mitdb
    ]
    jobs += [
        (kind, p, lead, nstdb, 0.0, cfg, paced, args.fs, args.lose, args.t_waves)
        for kind in ("clean", "em 6 dB")
        for p in mitdb
    ]
    jobs += [("vfdb", p, lead, nstdb, 0.0, cfg, paced, args.fs, args.lose, args.t_waves) for p in vf]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(job, jobs))
    sets: dict[str, Tally] = {}
    for kind, name, t in results:
        sets.setdefault(kind, Tally()).add(t)
        late = [d for d in t.delays if d > TARGET_S]
        early = t.early_clears
        if kind == "standstill" and (t.detected < t.standstills or t.flapping or late or early or t.to_lethal):
            print(
                f"standstill {name}: detected {t.detected}/{t.standstills}, flapping {t.flapping}, "
                f"delays over {TARGET_S:g} s: {' '.join(f'{d:.1f}' for d in late) or 'none'}, "
                f"cleared this long before the rhythm was back: {' '.join(f'{d:.1f}' for d in early) or 'none'}, "
                f"ended by a VF or VT alarm: {t.to_lethal}"
            )
        if kind in ("clean", "em 6 dB") and t.false_alarms:
            print(f"{kind} {name}: {t.false_alarms} false asystole alarms")
        if kind == "vfdb" and t.vfdb_episodes:
            print(f"vfdb {name}: (ASYS episodes {t.vfdb_episodes}, detected {t.vfdb_detected}, raises {t.vfdb_raises}")
    s, v = sets["standstill"], sets.get("vfdb", Tally())
    print(
        f"standstill ({args.standstill_s:g} s, {PLACES} per record, {len(mitdb)} records): "
        f"detected {s.detected}/{s.standstills}, raise delay from the last beat median "
        f"{_median(s.delays):.1f} s max {max(s.delays, default=float('nan')):.1f} s, "
        f"over {TARGET_S:g} s {sum(d > TARGET_S for d in s.delays)}, clear after the first "
        f"returning beat median {_median(s.clears):.1f} s, flapping {s.flapping}; before that beat, "
        f"cleared with no other alarm {len(s.early_clears)}, ended by a VF or VT alarm {s.to_lethal}; "
        f"a rate above the silence's or an RR interval during the alarm in {s.rated}, an RR interval "
        f"from the standstill before it in {s.rr_before}"
    )
    for kind in ("clean", "em 6 dB"):
        t = sets[kind]
        print(f"no standstill, {kind}: {t.false_alarms} false asystole alarms in {t.hours:.1f} h")
    print(
        f"vfdb (ASYS >= {MIN_EPISODE_S:g} s: {v.vfdb_episodes} episodes, {v.vfdb_detected} raised, "
        f"delay from the annotated onset median {_median(v.vfdb_delays):.1f} s, {v.vfdb_raises} raises in all"
    )
    false = sets["clean"].false_alarms + sets["em 6 dB"].false_alarms
    if args.fs:
        print(f"records resampled to {args.fs:g} Hz, annotations with them")
    if args.lose:
        print(f"{args.lose:.1%} of the 100 ms blocks lost at random (gaps)")
    if args.t_waves:
        print("standstills with their T waves cut out too")
    print(
        f"overall asystole: standstills={s.standstills} detected={s.detected} "
        f"delay_median_s={_median(s.delays):.1f} delay_max_s={max(s.delays, default=float('nan')):.1f} "
        f"clear_median_s={_median(s.clears):.1f} early_clears={len(s.early_clears)} flapping={s.flapping} "
        f"false_alarms={false} "
        f"vfdb_episodes={v.vfdb_episodes} vfdb_detected={v.vfdb_detected} vfdb_raises={v.vfdb_raises}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
