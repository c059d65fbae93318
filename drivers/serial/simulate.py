"""Device simulators: the bytes each serial device sends for a given course of vitals.

Used to build the captures in ``hil_fixtures/serial/``, by the benchmark (simulated Nonin devices
on pseudo-terminals) and by tests.  Encoders follow the same reference as the decoders, so a
round trip proves agreement with the reference only through the worked vectors, which the tests
check separately.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from drivers.serial import ecg_frontend


@dataclass(frozen=True)
class OxiSecond:
    """What an oximeter shows during one second (None = no value)."""

    spo2: int | None
    pulse_rate: int | None
    sensor_off: bool = False
    artifact: bool = False
    battery_low: bool = False


def pleth_wave(n: int, rate_hz: float, pulse_rate: float, start_phase: float = 0.0) -> tuple[list[float], float]:
    """``n`` samples in 0..1 of a pulse wave (systolic upstroke, dicrotic notch); returns the end phase."""
    out = []
    phase = start_phase
    step = max(pulse_rate, 1.0) / 60.0 / rate_hz
    for _ in range(n):
        x = phase % 1.0
        v = math.exp(-(((x - 0.22) / 0.09) ** 2)) + 0.35 * math.exp(-(((x - 0.52) / 0.1) ** 2))
        out.append(min(1.0, v / 1.05))
        phase += step
    return out, phase


def nonin75_stream(seconds: Sequence[OxiSecond], fmt: int = 2, revision: int = 48) -> bytes:
    """Format #2 or #7 frames, 75 per second, packets of 25 frames."""
    out = bytearray()
    phase = 0.0
    k = 0
    for sec in seconds:
        pr = sec.pulse_rate or 60
        wave, phase = pleth_wave(75, 75.0, pr, phase)
        for w in wave:
            idx = k % 25
            status = 0x80 | (0x01 if idx == 0 else 0)
            if sec.sensor_off:
                status |= 0x40
            else:
                status |= 0x02  # green perfusion
            if sec.artifact:
                status |= 0x20
            hr = 511 if sec.pulse_rate is None or sec.sensor_off else sec.pulse_rate
            spo2 = 127 if sec.spo2 is None or sec.sensor_off else sec.spo2
            value = {0: (hr >> 7) & 0x03, 1: hr & 0x7F, 2: spo2, 3: revision}.get(idx, 0)
            if fmt == 2:
                pleth = 0 if sec.sensor_off else int(20 + 200 * w)
                body = bytes((0x01, status, pleth, value))
            else:
                pleth = 0 if sec.sensor_off else int(2000 + 50000 * w)
                body = bytes((status, pleth >> 8, pleth & 0xFF, value))
            out += body + bytes((sum(body) & 0xFF,))
            k += 1
    return bytes(out)


def nonin8_stream(seconds: Sequence[OxiSecond]) -> bytes:
    out = bytearray()
    for sec in seconds:
        hr = 511 if sec.pulse_rate is None or sec.sensor_off else sec.pulse_rate
        spo2 = 127 if sec.spo2 is None or sec.sensor_off else sec.spo2
        status = 0x80 | (hr >> 7) & 0x03
        if sec.sensor_off:
            status |= 0x40
        if sec.artifact:
            status |= 0x04
        out += bytes((status, hr & 0x7F, spo2, 0x01 if sec.battery_low else 0x00))
    return bytes(out)


def contec_stream(seconds: Sequence[OxiSecond]) -> bytes:
    out = bytearray()
    phase = 0.0
    for sec in seconds:
        pr = sec.pulse_rate or 60
        wave, phase = pleth_wave(60, 60.0, pr, phase)
        prev = 0.0
        for w in wave:
            beep = w >= 0.98 > prev
            prev = w
            if sec.sensor_off:
                b0, b1, hr, spo2, bar = 0x80 | 0x10, 0, 255, 127, 0
            else:
                b0 = 0x80 | 0x06 | (0x40 if beep else 0)
                b1, hr, spo2, bar = int(100 * w), sec.pulse_rate or 255, sec.spo2 or 127, int(15 * w)
            b2 = bar | ((hr & 0x80) >> 1)
            out += bytes((b0, b1, b2, hr & 0x7F, spo2))
    return bytes(out)


def masimo_stream(seconds: Sequence[OxiSecond], start: datetime, newer_firmware: bool = False) -> bytes:
    out = bytearray()
    for k, sec in enumerate(seconds):
        t = start + timedelta(seconds=k)
        exc = 0x000800 if not sec.sensor_off else 0x000821  # 0x800: SET mode
        if sec.artifact:
            exc |= 0x400
        spo2 = "---" if sec.spo2 is None or sec.sensor_off else f"{sec.spo2:03d}"
        bpm = "---" if sec.pulse_rate is None or sec.sensor_off else f"{sec.pulse_rate:03d}"
        pi = "--.--" if sec.sensor_off else "02.50"
        alarm = 0x0012 if (sec.spo2 or 100) < 88 and not sec.sensor_off else 0
        fields = [
            t.strftime("%m/%d/%y %H:%M:%S"),
            "SN=0123456789",
            f"SPO2={spo2}%",
            f"BPM={bpm}",
            f"PI={pi}%",
            "SPCO=--.-%",
            "SPMET=--.-%",
        ]
        if newer_firmware:
            fields += ["SPHB=--.-", "SPOC=---", "RESVD=---"]
        fields += ["DESAT=--", "PIDELTA=+--", "PVI=---", f"ALARM={alarm:04X}", f"EXC={exc:06X}"]
        if newer_firmware:
            fields.append("EXC1=00000000")
        out += (" ".join(fields) + "\r\n").encode()
    return bytes(out)


def ecg_frames(
    counts: npt.NDArray[np.integer],
    fs: int,
    lsb_nv: int,
    per_frame: int,
    width: int = 2,
    seq0: int = 0,
    pace: npt.NDArray[np.integer] | None = None,
) -> Iterator[bytes]:
    """``ecgstream`` frames of ``per_frame`` samples from raw counts (shape (n,) or (n, channels)).
    ``pace``: the sample indices of pacing pulses (ascending), sent in version 2 frames."""
    seq = seq0
    pulses = np.asarray([] if pace is None else pace, dtype=np.int64)
    for start in range(0, len(counts) - per_frame + 1, per_frame):
        offsets = None
        if pace is not None:
            lo, hi = np.searchsorted(pulses, [start, start + per_frame])
            offsets = [int(p) - start for p in pulses[lo:hi]]
        yield ecg_frontend.encode_frame(seq, counts[start : start + per_frame], fs, lsb_nv, width, pace=offsets)
        seq = (seq + 1) & 0xFFFF


def course(n: int, spo2: int = 97, pulse_rate: int = 72, seed: int = 0) -> list[OxiSecond]:
    """A steady patient with small seeded wander, for benchmarks and tests."""
    rng = np.random.default_rng(seed)
    return [
        OxiSecond(int(np.clip(spo2 + rng.integers(-1, 2), 85, 100)), int(pulse_rate + rng.integers(-3, 4)))
        for _ in range(n)
    ]
