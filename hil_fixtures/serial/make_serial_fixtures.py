"""Rebuild the serial byte captures in this folder (deterministic: same inputs, same bytes).

Run from the repository root: ``uv run python hil_fixtures/serial/make_serial_fixtures.py``.

The oximeter captures encode the constructed patient course of ``hil_fixtures/vitals/patient-a.jsonl``
(SpO2 and pulse rate per second, its sensor-off spell at 230-245 s) as each device would send it;
the ECG capture carries MIT-BIH record 119 (``hil_fixtures/ecg/mitdb_119_0s``, lead MLII, 360 Hz,
5 uV per count) in ``ecgstream`` frames.  Each ``*_faults`` capture is its clean twin with faults
injected at fixed places, listed with their byte offsets in ``*_faults.json``.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from drivers.serial import simulate  # noqa: E402
from drivers.serial.simulate import OxiSecond  # noqa: E402
from drivers.wfdb_reader import read_record  # noqa: E402


def patient_course(path: Path) -> list[OxiSecond]:
    spo2: dict[int, float | None] = {}
    pr: dict[int, float | None] = {}
    off: set[int] = set()
    artifact: set[int] = set()
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        sec = int(obj["t"])
        flags = obj.get("flags", [])
        if "sensor_off" in flags:
            off.add(sec)
        if "artifact" in flags:
            artifact.add(sec)
        if obj.get("vital") == "spo2":
            spo2[sec] = obj["value"]
        elif obj.get("vital") == "pulse_rate":
            pr[sec] = obj["value"]
    n = max(spo2) + 1
    out = []
    last_s, last_p = 97.0, 72.0
    for s in range(n):
        vs, vp = spo2.get(s, last_s), pr.get(s, last_p)
        last_s, last_p = vs if vs is not None else last_s, vp if vp is not None else last_p
        out.append(
            OxiSecond(
                spo2=None if vs is None else round(vs),
                pulse_rate=None if vp is None else round(vp),
                sensor_off=s in off,
                artifact=s in artifact,
            )
        )
    return out


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def inject(frames: list[bytes], faults: list[tuple[str, int, Any]], seed: int) -> tuple[bytes, list[dict[str, Any]]]:
    """Apply faults keyed by frame index; return the bytes and a log with byte offsets in the output.

    Kinds: ``garbage`` (n random bytes before the frame), ``lose_byte`` (delete byte k of the frame),
    ``flip`` (invert byte k: a bad checksum/CRC), ``lose_frames`` (n whole frames vanish),
    ``unplug`` (the capture stops after k bytes of the frame).
    """
    rng = random.Random(seed)
    by_frame: dict[int, list[tuple[str, Any]]] = {}
    for kind, idx, arg in faults:
        by_frame.setdefault(idx, []).append((kind, arg))
    out = bytearray()
    log: list[dict[str, Any]] = []
    skip = 0
    for i, fr in enumerate(frames):
        if skip:
            skip -= 1
            continue
        frame = bytearray(fr)
        for kind, arg in by_frame.get(i, []):
            entry = {"kind": kind, "frame": i, "offset": len(out)}
            if kind == "garbage":
                junk = bytes(rng.randrange(256) for _ in range(arg))
                out += junk
                entry["bytes"] = arg
            elif kind == "lose_byte":
                del frame[arg]
                entry["byte"] = arg
            elif kind == "flip":
                frame[arg] ^= 0xFF
                entry["byte"] = arg
            elif kind == "lose_frames":
                skip = arg - 1
                frame = bytearray()
                entry["frames"] = arg
            elif kind == "unplug":
                frame = frame[:arg]
                entry["bytes_kept"] = arg
            log.append(entry)
        out += frame
        if any(k == "unplug" for k, _ in by_frame.get(i, [])):
            break
    return bytes(out), log


def write(name: str, data: bytes, log: list[dict[str, Any]] | None = None) -> None:
    (HERE / name).write_bytes(data)
    if log is not None:
        stem = name.rsplit(".", 1)[0]
        (HERE / f"{stem}.json").write_text(json.dumps({"capture": name, "faults": log}, indent=1) + "\n")
    print(f"{name}: {len(data)} bytes")


OXI_FAULTS: list[tuple[str, int, Any]] = [
    ("garbage", 100, 37),
    ("lose_byte", 300, 2),
    ("flip", 500, 3),
    ("garbage", 800, 5),
    ("lose_frames", 1000, 3),
    ("unplug", 1400, 3),
]


def main() -> None:
    course = patient_course(ROOT / "hil_fixtures" / "vitals" / "patient-a.jsonl")
    window = course[220:280]  # includes the 230-245 s sensor-off spell

    nonin2 = simulate.nonin75_stream(window, fmt=2)
    write("nonin2_patient-a_220s.bin", nonin2)
    write("nonin2_faults.bin", *inject(split(nonin2, 5), OXI_FAULTS, seed=2))

    write("nonin7_patient-a_220s.bin", simulate.nonin75_stream(window[:20], fmt=7))

    battery = [OxiSecond(s.spo2, s.pulse_rate, s.sensor_off, s.artifact, battery_low=k >= 270)
               for k, s in enumerate(course)]  # fmt: skip
    write("nonin8_patient-a.bin", simulate.nonin8_stream(battery))

    contec = simulate.contec_stream(window[:30])
    write("contec_patient-a_220s.bin", contec)
    write("contec_faults.bin", *inject(split(contec, 5), OXI_FAULTS, seed=3))

    start = datetime(2026, 3, 1, 8, 0, 0)
    lines = simulate.masimo_stream(course[100:190], start) + simulate.masimo_stream(
        course[190:280], datetime(2026, 3, 1, 8, 1, 30), newer_firmware=True
    )
    write("masimo_patient-a_100s.txt", lines)
    masimo_lines = lines.split(b"\r\n")[:-1]
    masimo_faults: list[tuple[str, int, Any]] = [
        ("garbage", 10, 23),
        ("lose_byte", 20, 30),
        ("flip", 40, 5),
        ("garbage", 60, 600),
        ("unplug", 120, 40),
    ]
    write("masimo_faults.txt", *inject([ln + b"\r\n" for ln in masimo_lines], masimo_faults, seed=4))

    rec = read_record(ROOT / "hil_fixtures" / "ecg" / "mitdb_119_0s")
    counts = np.round(rec.signals[: 30 * 360, 0] * 200).astype(np.int64)  # 200 counts/mV = 5 uV per count
    frames = list(simulate.ecg_frames(counts, 360, 5000, per_frame=18))
    write("ecgstream_mitdb119.bin", b"".join(frames))
    ecg_faults: list[tuple[str, int, Any]] = [
        ("garbage", 50, 64),
        ("lose_byte", 120, 20),
        ("flip", 200, 30),
        ("lose_frames", 300, 4),
        ("garbage", 400, 3),
        ("unplug", 550, 25),
    ]
    write("ecgstream_faults.bin", *inject(frames, ecg_faults, seed=5))


if __name__ == "__main__":
    main()
