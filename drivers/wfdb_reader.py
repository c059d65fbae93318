"""A minimal reader for WFDB records in formats 16 and 212 (what MIT-BIH and our excerpts use).

The ``wfdb`` package reads these too but is a test/benchmark dependency, not a run-time one: the
replay driver needs only the header's gain and baseline and the packed samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt


class WfdbFormatError(ValueError):
    pass


@dataclass(frozen=True)
class WfdbRecord:
    name: str
    fs: float
    signals: npt.NDArray[np.float64]  # shape (n_samples, n_signals), physical units (mV)
    units: list[str]
    names: list[str]


def read_record(path: Path) -> WfdbRecord:
    """Read ``path``.hea and its .dat into physical units."""
    header = path.with_suffix(".hea") if path.suffix != ".hea" else path
    try:
        lines = [ln.strip() for ln in header.read_text().splitlines()]
    except OSError as e:
        raise WfdbFormatError(f"cannot read WFDB header {header}: {e}") from e
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise WfdbFormatError(f"{header}: empty header")
    rec = lines[0].split()
    try:
        nsig = int(rec[1])
        fs = float(rec[2].split("/")[0]) if len(rec) > 2 else 250.0
        nsamp = int(rec[3]) if len(rec) > 3 else -1
    except (IndexError, ValueError) as e:
        raise WfdbFormatError(f"{header}: bad record line {lines[0]!r}") from e
    specs = [ln.split() for ln in lines[1 : 1 + nsig]]
    if len(specs) != nsig:
        raise WfdbFormatError(f"{header}: expected {nsig} signal lines")
    dat_names = {s[0] for s in specs}
    fmts = {s[1].split("x")[0].split(":")[0] for s in specs}
    if len(dat_names) != 1 or len(fmts) != 1:
        raise WfdbFormatError(f"{header}: signals in several files or formats are not supported")
    fmt = fmts.pop()
    raw_bytes = (header.parent / dat_names.pop()).read_bytes()
    if fmt == "16":
        data = np.frombuffer(raw_bytes[: len(raw_bytes) // 2 * 2], dtype="<i2").astype(np.int32)
    elif fmt == "212":
        b = np.frombuffer(raw_bytes[: len(raw_bytes) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        s0 = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
        s1 = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
        data = np.empty(2 * len(b), dtype=np.int32)
        data[0::2], data[1::2] = s0, s1
        data[data >= 2048] -= 4096
    else:
        raise WfdbFormatError(f"{header}: WFDB format {fmt} is not supported (16 and 212 are)")
    n = len(data) // nsig
    if nsamp >= 0:
        n = min(n, nsamp)
    data = data[: n * nsig].reshape(n, nsig)
    gains: list[float] = []
    baselines: list[int] = []
    units: list[str] = []
    names: list[str] = []
    for s in specs:
        gain_field = s[2] if len(s) > 2 else "200"
        unit = "mV"
        if "/" in gain_field:
            gain_field, unit = gain_field.split("/", 1)
        base = 0
        if "(" in gain_field:
            gain_field, base_s = gain_field.rstrip(")").split("(")
            base = int(base_s)
        gain = float(gain_field) or 200.0
        if "(" not in (s[2] if len(s) > 2 else "") and len(s) > 4:
            base = int(s[4])  # ADC zero when no explicit baseline is given
        gains.append(gain)
        baselines.append(base)
        units.append(unit)
        names.append(" ".join(s[8:]) if len(s) > 8 else f"sig{len(names)}")
    phys = (data - np.array(baselines)) / np.array(gains)
    return WfdbRecord(name=header.stem, fs=fs, signals=phys.astype(np.float64), units=units, names=names)
