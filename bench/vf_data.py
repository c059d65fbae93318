"""WFDB helpers shared by the VF benchmark and the VF model trainer.

* ``vf_intervals`` reads where a record marks ventricular fibrillation or flutter, both ways
  databases do it: rhythm aux notes (``(VF``, ``(VFIB``, ``(VFL`` start it, any other rhythm note
  ends it) and ``[`` ... ``]`` onset/end annotations (an unclosed ``[`` runs to the end).
* ``mix_noise`` adds a noise record from the MIT-BIH Noise Stress Test Database at a given SNR,
  with the signal power taken as (median peak-to-peak per second)^2 / 8 — the power of a sine of
  that amplitude, after the nstdb convention of measuring the signal by its QRS amplitude — and
  the noise power as the mean square of the noise (mean removed).
* ``load``, ``vf_intervals`` and ``rhythm_notes`` take an optional ``fs``: the record resampled
  to that rate (``resample``) and its annotations' sample numbers scaled to it, to score the
  detectors at a device's rate (a Polar H10 strap streams 130 Hz) on records made at another.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
T = TypeVar("T")
VF_NOTES = ("(VF", "(VFIB", "(VFL")


def load(path: Path, lead: int = 0, fs: float | None = None) -> tuple[FloatArray, float]:
    """The record's ``lead`` in mV and its rate; resampled to ``fs`` when given."""
    import wfdb  # noqa: PLC0415

    rec = wfdb.rdrecord(str(path), channels=[lead])
    sig = np.nan_to_num(np.asarray(rec.p_signal[:, 0], dtype=np.float64))
    unit = (rec.units or ["mV"])[0]
    if unit.lower() in ("uv", "µv"):
        sig = sig * 1e-3
    if fs is None or fs == rec.fs:
        return sig, float(rec.fs)
    return resample(sig, float(rec.fs), fs), fs


def resample(x: FloatArray, from_fs: float, to_fs: float) -> FloatArray:
    """``x`` at ``to_fs`` (polyphase, with its anti-alias filter: what a device sampling at that
    rate behind its own filter would give)."""
    from fractions import Fraction  # noqa: PLC0415

    from scipy.signal import resample_poly  # noqa: PLC0415

    ratio = Fraction(to_fs / from_fs).limit_denominator(1000)
    return np.asarray(resample_poly(x, ratio.numerator, ratio.denominator), dtype=np.float64)


def annotations(path: Path, fs: float | None) -> tuple[list[int], list[str], list[str]]:
    """The reference annotations' sample numbers (scaled to ``fs`` when given), symbols and aux notes."""
    import wfdb  # noqa: PLC0415

    ann = wfdb.rdann(str(path), "atr")
    scale = 1.0 if fs is None or not ann.fs else fs / float(ann.fs)
    samples = [round(int(s) * scale) for s in ann.sample]
    return samples, list(ann.symbol), [(a or "").strip("\x00").strip() for a in ann.aux_note]


def vf_intervals(path: Path, n: int, fs: float | None = None) -> list[tuple[int, int]]:
    """Sample intervals [start, end) of VF/flutter in record ``path`` of ``n`` samples, merged."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    bracket: int | None = None
    for s, sym, note in zip(*annotations(path, fs), strict=True):
        if sym == "[":
            bracket = s if bracket is None else bracket
        elif sym == "]":
            if bracket is not None:
                out.append((bracket, s))
            bracket = None
        if note.startswith("("):
            is_vf = note in VF_NOTES
            if is_vf and start is None:
                start = s
            elif not is_vf and start is not None:
                out.append((start, s))
                start = None
    if start is not None:
        out.append((start, n))
    if bracket is not None:
        out.append((bracket, n))
    out.sort()
    merged: list[tuple[int, int]] = []
    for a, b in out:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        elif b > a:
            merged.append((a, b))
    return merged


def rhythm_notes(path: Path, fs: float | None = None) -> list[tuple[int, str]]:
    """The record's rhythm aux notes (``(N``, ``(VT``, ``(NOISE`` ...), as (sample, note) in order."""
    samples, _, notes = annotations(path, fs)
    return [(s, note) for s, note in zip(samples, notes, strict=True) if note.startswith("(")]


def block_starts(n: int, step: int, lose: float = 0.0, seed: int = 0) -> list[int]:
    """The first sample of each ``step``-long block of ``n`` samples that arrives, each lost with
    probability ``lose`` (a link that drops frames: the channel sees a gap), drawn from ``seed``."""
    starts = range(0, n, step)
    if not lose:
        return list(starts)
    lost = np.random.default_rng(seed).random(len(starts)) < lose
    return [a for a, gone in zip(starts, lost, strict=True) if not gone]


def record_seed(path: Path) -> int:
    """A seed of the record's name: the same blocks lost in every run (``block_starts``)."""
    return int.from_bytes(path.name.encode(), "little") % 2**32


def vf_mask(n: int, intervals: list[tuple[int, int]]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(n, dtype=bool)
    for a, b in intervals:
        mask[a:b] = True
    return mask


def noise_record(nstdb: Path, name: str, fs: float, n: int, channel: int = 0, offset_s: float = 0.0) -> FloatArray:
    """``n`` samples of noise record ``name`` ('em', 'ma', 'bw') at ``fs``, looped if needed."""
    noise, _ = load(nstdb / name, channel, fs)
    start = int(offset_s * fs) % len(noise)
    noise = np.roll(noise, -start)
    reps = int(np.ceil(n / len(noise)))
    return np.tile(noise, reps)[:n] - float(noise.mean())


def signal_power(x: FloatArray, fs: float) -> float:
    sec = int(fs)
    m = len(x) // sec
    ptp = np.ptp(x[: m * sec].reshape(m, sec), axis=1)
    return float(np.median(ptp)) ** 2 / 8.0


def mix_noise(x: FloatArray, fs: float, noise: FloatArray, snr_db: float) -> FloatArray:
    gain = np.sqrt(signal_power(x, fs) / (float(np.mean(noise**2)) * 10 ** (snr_db / 10.0)))
    return x + gain * noise


def annotated_records(folder: Path, names: list[str] | None = None) -> list[Path]:
    """The WFDB records in ``folder`` that have reference annotations (``.atr``), without
    extension, sorted; only ``names`` when given."""
    paths = sorted(p.with_suffix("") for p in folder.glob("*.hea") if p.with_suffix(".atr").exists())
    return [p for p in paths if p.name in set(names)] if names else paths


def clean_and_noisy(
    args: argparse.Namespace, tag: str, run_set: Callable[[str | None, float | None], T], line: Callable[[str, T], str]
) -> int:
    """A rhythm bench's main run: each ``--snr`` with the ``--noise`` record (when nstdb has it),
    then the clean records; the noisy sets' summary lines, then the clean one last as
    ``overall <tag>``.  ``run_set(noise, snr)`` scores and prints one set."""
    t0 = time.perf_counter()
    summaries = []
    if (args.nstdb / f"{args.noise}.hea").exists():
        for snr in args.snr:
            summaries.append(line(f"{args.noise} {snr:g} dB {tag}", run_set(args.noise, snr)))
    else:
        print(f"no noise record {args.nstdb / args.noise}: noise-mixed runs skipped")
    clean = run_set(None, None)
    rate = f", resampled to {args.fs:g} Hz" if getattr(args, "fs", None) else ""
    print(f"records: {args.n_records} (lead {args.lead}{rate}), wall time {time.perf_counter() - t0:.0f} s")
    for summary in summaries:
        print(summary)
    print(line(f"overall {tag}", clean))
    return 0
