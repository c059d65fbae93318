"""Causal filters for the QRS detector: design once per sample rate, run block by block.

Every filter is a cascade of second-order sections run with its state (``zi``) carried between
blocks, so a signal fed in any split gives bit-for-bit the output of the same signal fed at once
(the recurrence runs over the same numbers in the same order).

scipy.signal is imported only when an ECG filter is first designed: it costs tens of MB of
resident memory, which a gateway with only oximeters and scales never pays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

MIN_RATE_HZ = 100.0
MAX_RATE_HZ = 1000.0

# QRS energy sits at roughly 5-20 Hz; P/T waves and baseline wander below, muscle noise and
# mains above.  The band is fixed in Hz so every sample rate sees the same feature.
QRS_BAND_HZ = (5.0, 18.0)
# Smoothing of the squared slope: plays the role of Pan-Tompkins' 150 ms moving-window integrator
# (a 150 ms boxcar passes up to ~3 Hz) without its drift-prone running sum.
ENERGY_LOWPASS_HZ = 4.0

_UNIT_TO_MV = {"mV": 1.0, "uV": 1e-3, "µV": 1e-3, "V": 1e3, "nV": 1e-6}


def to_millivolts(samples: FloatArray, unit: str) -> FloatArray:
    """ECG samples in mV; raises ValueError for a unit that is not a voltage."""
    try:
        scale = _UNIT_TO_MV[unit]
    except KeyError:
        raise ValueError(f"ECG samples must be a voltage (mV, uV, V), got unit {unit!r}") from None
    out = np.asarray(samples, dtype=np.float64)
    return out if scale == 1.0 else out * scale


_SosKernel = Callable[[Any, Any, Any], None]
_kernel: _SosKernel | None = None


def _sos_kernel() -> _SosKernel:
    """scipy's in-place SOS kernel, imported on first use.

    ``scipy.signal.sosfilt`` validates and copies its arguments on every call (~25 µs), which at
    10 blocks/s per channel costs more than the filtering itself; its compiled kernel does the
    same arithmetic in ~1.5 µs.  If a future scipy moves the private kernel we fall back to the
    public function, same numbers, just slower.
    """
    global _kernel  # noqa: PLW0603 - a process-wide, idempotent import cache
    if _kernel is None:
        try:
            from scipy.signal._sosfilt import _sosfilt  # noqa: PLC0415

            _kernel = _sosfilt
        except ImportError:  # pragma: no cover - depends on the installed scipy
            from scipy.signal import sosfilt  # noqa: PLC0415

            def _public(sos: Any, x: Any, zi: Any) -> None:
                y, zf = sosfilt(sos, x[0], zi=zi[0])
                x[0] = y
                zi[0] = zf

            _kernel = _public
    return _kernel


@dataclass(slots=True)
class SosFilter:
    """One causal SOS cascade and its state; ``run`` filters a block and advances the state."""

    sos: FloatArray
    zi: FloatArray  # shape (1, n_sections, 2), the layout the kernel wants
    primed: bool = False

    @classmethod
    def design(cls, sos: FloatArray) -> SosFilter:
        sos = np.ascontiguousarray(sos, dtype=np.float64)
        return cls(sos=sos, zi=np.zeros((1, sos.shape[0], 2)))

    def run(self, x: FloatArray) -> FloatArray:
        if not self.primed:
            # Start as if the first value had always been there: no step transient from a DC
            # offset at power-on or after a gap.
            from scipy.signal import sosfilt_zi  # noqa: PLC0415

            self.zi[0] = sosfilt_zi(self.sos) * (x[0] if len(x) else 0.0)
            self.primed = True
        y = np.array(x, dtype=np.float64, ndmin=2, order="C", copy=True)
        _sos_kernel()(self.sos, y, self.zi)
        out: FloatArray = y[0]
        return out

    def reset(self) -> None:
        self.zi[...] = 0.0
        self.primed = False


@dataclass(frozen=True, slots=True)
class FeatureDesign:
    """Filter coefficients and delays for one sample rate."""

    fs: float
    bandpass: FloatArray
    lowpass: FloatArray
    bp_delay: int  # samples from an R wave to its peak in the band-passed signal
    feature_delay: int  # samples from an R wave to its peak in the energy feature


def design_feature(fs: float) -> FeatureDesign:
    """Design the QRS band-pass and energy low-pass for ``fs`` and measure their delays."""
    if not MIN_RATE_HZ <= fs <= MAX_RATE_HZ:
        raise ValueError(f"ECG sample rate {fs} Hz is outside {MIN_RATE_HZ:g}-{MAX_RATE_HZ:g} Hz")
    from scipy.signal import butter, sosfilt  # noqa: PLC0415

    bandpass = np.asarray(butter(2, QRS_BAND_HZ, btype="bandpass", fs=fs, output="sos"), dtype=np.float64)
    lowpass = np.asarray(butter(2, ENERGY_LOWPASS_HZ, btype="lowpass", fs=fs, output="sos"), dtype=np.float64)
    # Delays measured on a synthetic 80 ms-wide QRS rather than from a formula: the chain is
    # non-linear (squaring), and what matters is where a QRS-shaped input peaks.
    n = int(fs * 2)
    t = (np.arange(n) - n // 2) / fs
    qrs = np.exp(-0.5 * (t / 0.012) ** 2)
    bp = sosfilt(bandpass, qrs)
    energy = np.abs(np.diff(bp, prepend=0.0))
    feat = sosfilt(lowpass, energy)
    return FeatureDesign(
        fs=fs,
        bandpass=bandpass,
        lowpass=lowpass,
        bp_delay=int(np.argmax(np.abs(bp))) - n // 2,
        feature_delay=int(np.argmax(feat)) - n // 2,
    )
