"""Rebuild the replay fixtures: MIT-BIH ECG excerpts and the constructed vitals streams.

Run from the repository root: ``uv run python hil_fixtures/make_fixtures.py [--mitdb ../shared/data/mitdb]``.
Deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import numpy as np
import wfdb

HERE = Path(__file__).parent
# (record, start second, length in seconds): 119 = sinus rhythm with ventricular bigeminy episodes,
# 116 = sinus rhythm with a few ectopics.  Lead 0 (MLII) only.
EXCERPTS = [("119", 0, 300), ("116", 600, 300)]
# The demo's bedside patient: vfdb 424 from 1200 s, 260 s: noisy sinus rhythm, ventricular
# fibrillation from 59 s (annotated 1259-1365 s), asystole (1371-1383 s), then a nodal rhythm.
VF_EXCERPTS = [("424", 1200, 260)]


def cut_excerpt(
    mitdb: Path,
    name: str,
    start_s: int,
    length_s: int,
    out_dir: Path,
    prefix: str = "mitdb",
    fmt: str = "212",
    source: str = "MIT-BIH",
) -> None:
    """Write lead 0 of record ``name`` (MIT-BIH by default) from ``start_s`` for ``length_s`` (WFDB ``fmt``,
    with its reference annotations shifted to the excerpt) as ``out_dir/<prefix>_<name>_<start>s``."""
    rec = wfdb.rdrecord(str(mitdb / name), channels=[0], physical=False)
    fs = int(rec.fs)
    a, b = start_s * fs, (start_s + length_s) * fs
    out = f"{prefix}_{name}_{start_s}s"
    wfdb.wrsamp(
        out,
        fs=fs,
        units=rec.units,
        sig_name=rec.sig_name,
        d_signal=rec.d_signal[a:b],
        p_signal=None,
        fmt=[fmt],
        adc_gain=rec.adc_gain,
        baseline=rec.baseline,
        write_dir=str(out_dir),
        comments=[f"excerpt of {source} record {name}, samples {a}..{b}"],
    )
    ann = wfdb.rdann(str(mitdb / name), "atr", sampfrom=a, sampto=b - 1)
    sample, symbol, aux_note = np.asarray(ann.sample) - a, ann.symbol, ann.aux_note
    if len(sample) == 0:
        # Nothing annotated within (a stretch of one rhythm): the note in force, at the start.
        before = wfdb.rdann(str(mitdb / name), "atr", sampto=a)
        sample, symbol, aux_note = np.asarray([0]), before.symbol[-1:], before.aux_note[-1:]
    wfdb.wrann(
        out,
        "atr",
        sample=sample,
        symbol=symbol,
        aux_note=aux_note,
        fs=fs,
        write_dir=str(out_dir),
    )


def ecg_excerpts(mitdb: Path) -> None:
    for name, start_s, length_s in EXCERPTS:
        cut_excerpt(mitdb, name, start_s, length_s, HERE / "ecg")


def vf_excerpts(vfdb: Path) -> None:
    for name, start_s, length_s in VF_EXCERPTS:
        cut_excerpt(
            vfdb,
            name,
            start_s,
            length_s,
            HERE / "ecg",
            prefix="vfdb",
            source="MIT-BIH Malignant Ventricular Ectopy Database",
        )


def vitals_stream(path: Path, seed: int, desat: tuple[float, float] | None, sensor_off: tuple[float, float]) -> None:
    """A 1 Hz pulse-oximeter log: baseline SpO2 ~96-97 %, PR ~70, with artefacts, a sensor-off spell
    and (optionally) a desaturation to ~86 % lasting the given (start, end) seconds."""
    rng = random.Random(seed)
    lines = []
    for t in range(300):
        if sensor_off[0] <= t < sensor_off[1]:
            if t == sensor_off[0]:
                lines.append({"t": t, "event": "sensor_off", "detail": "finger out"})
            lines.append({"t": t, "vital": "spo2", "value": None, "flags": ["sensor_off"]})
            continue
        if t == sensor_off[1]:
            lines.append({"t": t, "event": "sensor_on"})
        spo2 = 96.5 + rng.gauss(0, 0.6)
        pr = 70 + 4 * math.sin(t / 20) + rng.gauss(0, 1.5)
        if desat and desat[0] <= t < desat[1]:
            depth = min(1.0, (t - desat[0]) / 8, (desat[1] - t) / 8)
            spo2 -= 11 * depth
            pr += 18 * depth
        flags: list[str] = []
        if rng.random() < 0.03:  # motion artefact: an implausible spike flagged by the device
            spo2, flags = 70 + rng.random() * 10, ["artifact"]
        lines.append({"t": t, "vital": "spo2", "value": round(min(spo2, 100.0), 1), "flags": flags})
        lines.append({"t": t + 0.5, "vital": "pulse_rate", "value": round(pr, 1), "flags": flags})
    # A temperature and a BP spot check, as a home patient would take them.
    lines.append({"t": 30, "vital": "body_temperature", "value": 37.1 if desat is None else 38.9})
    lines.append({"t": 200, "vital": "systolic_bp", "value": 128})
    lines.append({"t": 200, "vital": "diastolic_bp", "value": 82})
    lines.sort(key=lambda x: x["t"])
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mitdb", type=Path, default=HERE.parent.parent / "shared" / "data" / "mitdb")
    ap.add_argument("--vfdb", type=Path, default=HERE.parent.parent / "shared" / "data" / "vfdb")
    args = ap.parse_args()
    ecg_excerpts(args.mitdb)
    vf_excerpts(args.vfdb)
    vitals_stream(HERE / "vitals" / "patient-a.jsonl", seed=1, desat=(120, 170), sensor_off=(230, 245))
    vitals_stream(HERE / "vitals" / "patient-b.jsonl", seed=2, desat=None, sensor_off=(60, 64))


if __name__ == "__main__":
    main()
