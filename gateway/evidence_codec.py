"""Compact waveform strips: integer samples -> deltas -> zlib -> base64, and back.

ECG moves little from one sample to the next, so the deltas are small integers that zlib packs
to one or two bytes a sample; 16-bit deltas are used when they fit, 32-bit otherwise.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    IntArray = npt.NDArray[np.int64]

SampleFormat = Literal["i2", "i4"]
_I2 = np.iinfo(np.int16)
_I4 = np.iinfo(np.int32)


class EvidenceFormatError(ValueError):
    """A strip's data cannot be decoded."""


def encode(values: IntArray) -> tuple[SampleFormat, str]:
    """Integer samples -> (sample format, base64 text)."""
    v = np.asarray(values, dtype=np.int64)
    if len(v) and (v.min() < _I4.min // 2 or v.max() > _I4.max // 2):
        raise ValueError("samples beyond +-2^30 steps: choose a coarser resolution")
    deltas = np.diff(v, prepend=np.int64(0))
    fmt: SampleFormat = "i2" if len(v) == 0 or (deltas.min() >= _I2.min and deltas.max() <= _I2.max) else "i4"
    raw = deltas.astype("<" + fmt).tobytes()
    return fmt, base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def decode(data: str, sample_format: str, n_samples: int) -> IntArray:
    if sample_format not in ("i2", "i4"):
        raise EvidenceFormatError(f"unknown sample format {sample_format!r}")
    try:
        raw = zlib.decompress(base64.b64decode(data, validate=True))
    except (binascii.Error, zlib.error) as e:
        raise EvidenceFormatError(f"strip data is not zlib-compressed base64: {e}") from e
    deltas = np.frombuffer(raw, dtype="<" + sample_format)
    if len(deltas) != n_samples:
        raise EvidenceFormatError(f"strip holds {len(deltas)} samples, the record says {n_samples}")
    return np.cumsum(deltas.astype(np.int64))
