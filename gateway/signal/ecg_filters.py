"""Causal filters for the QRS detector: design once per sample rate, run block by block.

Every filter is a cascade of second-order sections run with its state (``zi``) carried between
blocks, so a signal fed in any split gives bit-for-bit the output of the same signal fed at once
(the recurrence runs over the same numbers in the same order).

scipy.signal itself is never imported (it costs ~80 MB of resident memory on its own): the
Butterworth designs are computed here with numpy, and only scipy's compiled SOS kernel is loaded,
on first use (see ``_sos_kernel``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
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
# Smoothing of the rectified slope: plays the role of Pan-Tompkins' 150 ms moving-window integrator
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


def all_finite(x: FloatArray) -> bool:
    """Whether every value of a 1-D float array is finite.

    The sum of squares is finite exactly when every value is, unless huge values overflow it:
    only then is each value checked.  One BLAS call instead of a temporary boolean array and a
    reduction (a quarter of the cost on a 100 ms block, which this runs on as it arrives);
    ``ndarray.dot``, not ``@``, which goes through numpy's generalised-ufunc machinery.
    """
    return math.isfinite(float(x.dot(x))) or bool(np.isfinite(x).all())


# No ECG front-end's input range reaches 10 V (the usual ones: +-2.4 V at unit gain, and the
# electrodes' DC offset is +-0.3 V): a sample beyond it is a decoding error, not a signal, and its
# powers overflow the detectors' sums (the VF features' and the quality index's kurtosis).
MAX_ABS_MV = 1e4
MAX_SQUARES_MV2 = MAX_ABS_MV * MAX_ABS_MV


def plausible(x: FloatArray) -> bool:
    """Whether every value of a 1-D float array is finite and within +-``MAX_ABS_MV``.

    A sum of squares up to ``MAX_SQUARES_MV2`` says so at once (NaN fails the comparison), as
    ``all_finite``'s does; only a larger one has each value checked."""
    if float(x.dot(x)) <= MAX_SQUARES_MV2:
        return True
    return bool(np.isfinite(x).all()) and float(np.abs(x).max()) <= MAX_ABS_MV


_join = bytearray().join
_FLOAT64 = np.dtype(np.float64)


def join_samples(parts: Sequence[FloatArray | bytes]) -> FloatArray:
    """``np.concatenate`` of 1-D native float64 arrays (the caller guarantees it), or of their
    bytes (``tobytes``), through their bytes: one join and an array over it, ~3k instructions
    less for two small arrays and ~10k for ten (no array-function dispatch, no dtype resolution
    per part).  The same bytes, so the same doubles; a writable array of our own.  A part that
    is not C-contiguous has no plain buffer (the join refuses it): then ``np.concatenate``."""
    try:
        # ndarray exports the buffer protocol (numpy's stubs do not declare it)
        joined = _join(parts)  # type: ignore[arg-type]
    except (BufferError, TypeError):
        arrays = [np.frombuffer(p, dtype=_FLOAT64) if isinstance(p, bytes) else p for p in parts]
        return np.concatenate(arrays)
    out: FloatArray = np.frombuffer(joined, dtype=_FLOAT64)
    return out


def concatenate(parts: Sequence[FloatArray]) -> FloatArray:
    """``np.concatenate`` of arrays of any dtype and shape: through ``join_samples`` when every
    part is 1-D float64 (the ECG path's own pieces), where that gives the same array."""
    if all(p.dtype is _FLOAT64 and p.ndim == 1 for p in parts):
        return join_samples(parts)
    return np.concatenate(parts)


_SosKernel = Callable[[Any, Any, Any], None]
_kernel: _SosKernel | None = None


def _sos_kernel() -> _SosKernel:
    """scipy's compiled, in-place SOS kernel, loaded without the rest of scipy.signal.

    ``import scipy.signal`` adds ~80 MB of resident memory (it pulls in linalg, special, fft,
    ...); the one compiled routine the filters need adds ~1.5 MB when its extension file is loaded
    on its own.  It also skips ``sosfilt``'s per-call validation and copies (~25 µs a call, more
    than the filtering of a 100 ms block).  If the private module ever moves, we fall back to the
    public ``sosfilt``: same arithmetic, just heavier.
    """
    global _kernel  # noqa: PLW0603 - a process-wide, idempotent import cache
    if _kernel is None:
        _kernel = _load_light_kernel() or _public_kernel()
    return _kernel


_double: _SosKernel | None = None


def _sos_kernel_double() -> _SosKernel:
    """The float64 specialisation of ``_sos_kernel`` (the filters only ever pass float64 arrays):
    called directly, it skips the fused function's type dispatch (~1.5k instructions a call)."""
    global _double  # noqa: PLW0603 - a process-wide, idempotent cache
    if _double is None:
        kernel = _sos_kernel()
        signatures = getattr(kernel, "__signatures__", None)
        special = signatures.get("double") if isinstance(signatures, dict) else None
        _double = special if callable(special) else kernel
    return _double


def _load_light_kernel() -> _SosKernel | None:
    import importlib.machinery  # noqa: PLC0415
    import importlib.util  # noqa: PLC0415
    import sys  # noqa: PLC0415

    loaded = sys.modules.get("scipy.signal._sosfilt")
    if loaded is not None:
        return getattr(loaded, "_sosfilt", None)
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))) / "signal"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = base / f"_sosfilt{suffix}"
        if path.exists():
            try:
                ext = importlib.util.spec_from_file_location("scipy.signal._sosfilt", path)
                if ext is None or ext.loader is None:
                    return None
                module = importlib.util.module_from_spec(ext)
                ext.loader.exec_module(module)
            except ImportError:
                return None
            kernel = getattr(module, "_sosfilt", None)
            return kernel if callable(kernel) else None
    return None


def _public_kernel() -> _SosKernel:  # pragma: no cover - only with an unusual scipy install
    from scipy.signal import sosfilt  # noqa: PLC0415

    def run(sos: Any, x: Any, zi: Any) -> None:
        y, zf = sosfilt(sos, x[0], zi=zi[0])
        x[0] = y
        zi[0] = zf

    return run


# --------------------------------------------------------------------------------------------
# Butterworth design, in numpy (bilinear transform of the analogue prototype, as scipy does), so
# that designing a filter does not import scipy.signal either.
# --------------------------------------------------------------------------------------------


def _section(zeros: tuple[complex, complex], pole: complex, gain: float = 1.0) -> list[float]:
    z1, z2 = zeros
    b = [gain, -gain * (z1 + z2).real, gain * (z1 * z2).real]
    return [*b, 1.0, -2.0 * pole.real, abs(pole) ** 2]


def _bilinear(poles: FloatArray | Any, fs: float) -> Any:
    fs2 = 2.0 * fs
    return (fs2 + poles) / (fs2 - poles)


def butter2_lowpass(fc: float, fs: float) -> FloatArray:
    """Second-order Butterworth low-pass as one SOS row (same response as scipy's butter)."""
    if not 0 < fc < fs / 2:
        raise ValueError(f"cut-off {fc} Hz must lie between 0 and {fs / 2} Hz")
    w = 2.0 * fs * np.tan(np.pi * fc / fs)  # pre-warped
    p_analog = w * np.exp(1j * np.pi * 3 / 4)  # upper pole of the 2nd-order prototype
    p = complex(_bilinear(p_analog, fs))
    fs2 = 2.0 * fs
    gain = float(w**2 / abs(fs2 - p_analog) ** 2)
    return np.asarray([_section((-1.0, -1.0), p, gain)], dtype=np.float64)


def butter2_bandpass(lo: float, hi: float, fs: float) -> FloatArray:
    """Second-order Butterworth band-pass (4 poles) as two SOS rows."""
    if not 0 < lo < hi < fs / 2:
        raise ValueError(f"band {lo}-{hi} Hz must lie between 0 and {fs / 2} Hz")
    wl = 2.0 * fs * np.tan(np.pi * lo / fs)
    wh = 2.0 * fs * np.tan(np.pi * hi / fs)
    bw, w0 = wh - wl, np.sqrt(wl * wh)
    proto = np.exp(1j * np.pi * np.array([3 / 4, 5 / 4]))
    half = proto * bw / 2
    root = np.sqrt(half**2 - w0**2 + 0j)
    p_analog = np.concatenate((half + root, half - root))
    # Keep one pole of each conjugate pair (upper half-plane).
    upper = sorted((p for p in p_analog if p.imag > 0), key=abs)
    fs2 = 2.0 * fs
    gain = float(bw**2 * abs(fs2**2 / np.prod(fs2 - p_analog)))
    sections = [
        _section((1.0, -1.0), complex(_bilinear(upper[0], fs)), gain),
        _section((1.0, -1.0), complex(_bilinear(upper[1], fs))),
    ]
    return np.asarray(sections, dtype=np.float64)


def steady_state(sos: FloatArray) -> FloatArray:
    """Per-section state for a unit step already applied forever (scipy's ``sosfilt_zi``)."""
    zi = np.zeros((sos.shape[0], 2))
    scale = 1.0
    for s, (b0, b1, b2, _a0, a1, a2) in enumerate(sos):
        # (I - A^T) zi = B - a[1:] b0, with A the companion matrix of the denominator.
        m = np.array([[1.0 + a1, -1.0], [a2, 1.0]])
        rhs = np.array([b1 - a1 * b0, b2 - a2 * b0])
        zi[s] = scale * np.linalg.solve(m, rhs)
        scale *= (b0 + b1 + b2) / (1.0 + a1 + a2)
    return zi


@dataclass(frozen=True, slots=True)
class FeatureDesign:
    """Filter coefficients and delays for one sample rate."""

    fs: float
    bandpass: FloatArray
    lowpass: FloatArray
    bp_delay: int  # samples from an R wave to its peak in the band-passed signal
    feature_delay: int  # samples from an R wave to its peak in the envelope
    unit_peak: float  # envelope peak of a 1 mV QRS


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
        """The filtered block, in a new array (``x`` is left as it is)."""
        if not self.primed:
            self._prime(x)
        kernel = _double or _sos_kernel_double()
        if type(x) is np.ndarray and x.dtype is _FLOAT64 and x.ndim == 1:
            # The usual block: a plain copy, filtered in place (np.array(..., ndmin=2) costs
            # ~2k instructions more a call, and this runs several times a second per channel).
            y1 = x.copy()
            kernel(self.sos, y1[None], self.zi)
            return y1
        y = np.array(x, dtype=np.float64, ndmin=2, order="C", copy=True)
        kernel(self.sos, y, self.zi)
        out: FloatArray = y[0]
        return out

    def run_in_place(self, x: FloatArray) -> FloatArray:
        """``run`` writing the output over ``x`` (a caller's own scratch array), without the copy;
        an array that cannot be filtered in place (not contiguous float64) is copied as by ``run``."""
        flags = x.flags  # a new flags object at each read of the attribute
        if x.dtype is not _FLOAT64 or x.ndim != 1 or not flags.c_contiguous or not flags.writeable:
            return self.run(x)
        if not self.primed:
            self._prime(x)
        (_double or _sos_kernel_double())(self.sos, x[None], self.zi)
        return x

    def _prime(self, x: FloatArray) -> None:
        if not self.primed:
            # Start as if the first value had always been there: no step transient from a DC
            # offset at power-on or after a gap.
            self.zi[0] = steady_state(self.sos) * (x[0] if len(x) else 0.0)
            self.primed = True

    def reset(self) -> None:
        self.zi[...] = 0.0
        self.primed = False


def filter_once(sos: FloatArray, x: FloatArray) -> FloatArray:
    """Filter a whole signal from rest (zero state)."""
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    return SosFilter(sos=sos, zi=np.zeros((1, sos.shape[0], 2)), primed=True).run(x)


def design_feature(fs: float) -> FeatureDesign:
    """Design the QRS band-pass and envelope low-pass for ``fs``; measure delays and scale."""
    if not MIN_RATE_HZ <= fs <= MAX_RATE_HZ:
        raise ValueError(f"ECG sample rate {fs} Hz is outside {MIN_RATE_HZ:g}-{MAX_RATE_HZ:g} Hz")
    bandpass = butter2_bandpass(*QRS_BAND_HZ, fs)
    lowpass = butter2_lowpass(ENERGY_LOWPASS_HZ, fs)
    # Delays and scale measured on a synthetic QRS (1 mV, ~80 ms wide) rather than from a formula:
    # the chain is non-linear (rectified slope), and what matters is where a QRS-shaped input peaks.
    n = int(fs * 2)
    t = (np.arange(n) - n // 2) / fs
    qrs = np.exp(-0.5 * (t / 0.012) ** 2)
    bp = filter_once(bandpass, qrs)
    envelope = filter_once(lowpass, np.abs(np.diff(bp, prepend=0.0)) * fs)
    return FeatureDesign(
        fs=fs,
        bandpass=bandpass,
        lowpass=lowpass,
        bp_delay=int(np.argmax(np.abs(bp))) - n // 2,
        feature_delay=int(np.argmax(envelope)) - n // 2,
        unit_peak=float(envelope.max()),
    )
