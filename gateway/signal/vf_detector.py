"""Streaming ventricular fibrillation / flutter detector for one ECG channel.

Every ``hop_s`` (1 s, aligned on the sample index) the last ``window_s`` (4 s) of ECG, band-passed
1-30 Hz by a causal filter and decimated to 80-160 Hz, are described by established VF features
(``vf_features``) and scored by a logistic model trained on the MIT-BIH Malignant Ventricular
Ectopy Database together with negatives from MIT-BIH arrhythmia records, clean and mixed with
electrode-motion and muscle noise
(``scripts/train_vf_model.py``; the weights and their provenance are in ``vf_model.json``).  A step
the logistic model calls VF-like stays VF-like only when a small tree ensemble trained on the same
steps agrees (``vf_trees``): about a third fewer alarmed seconds outside VF/flutter, leave-records-out
(``bench/vf_tree_study.py``).

An *episode* starts when ``raise_steps`` of the last ``raise_of`` (7 of 8) steps score VF-like, and ends after
``clear_steps`` VF-free steps in a row (hysteresis: a few organised-looking seconds inside VF do not
end it, nor restart it).  The state is a ring of filtered samples and a few numbers, so feeding a
signal in any split gives exactly the steps and episodes of feeding it at once (tested).
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from operator import mul
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gateway.frozen_init import fast_init
from gateway.signal import vf_features
from gateway.signal.ecg_filters import SosFilter, butter2_bandpass, butter2_lowpass, concatenate
from gateway.signal.vf_trees import VfTrees, default_trees

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

MODEL_PATH = Path(__file__).with_name("vf_model.json")
BAND_HZ = (1.0, 30.0)
ANTI_ALIAS_HZ = 35.0
FEATURE_RATE_HZ = 80.0
UNSCORED = math.nan  # probability of a step decided by the organised-rhythm veto alone


@dataclass(frozen=True)
class VfModel:
    """Logistic model over standardised features: p = 1 / (1 + exp(-(w . (f - mean) / scale + b)))."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    _w: FloatArray = field(init=False, repr=False, compare=False)
    _b: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Folded once into one weight vector and offset: scoring runs every second per channel.
        w = np.asarray(self.weights) / np.asarray(self.scale)
        object.__setattr__(self, "_w", w)
        object.__setattr__(self, "_b", self.bias - float(np.dot(w, self.mean)))

    def score(self, f: FloatArray) -> float:
        return sigmoid(float(np.dot(self._w, f)) + self._b)

    def early_exit(self, n: int, fs: float, threshold: float) -> EarlyExit:
        """What the exact early exit needs for windows of ``n`` samples at ``fs`` Hz: each stage's
        weights and the most the later stages can add (from the features' bounds)."""
        lo, hi = vf_features.bounds(n, fs)
        w = self._w
        with np.errstate(invalid="ignore"):  # 0 * inf: a feature without weight adds nothing
            top = np.where(w == 0.0, 0.0, np.maximum(w * lo, w * hi))
        index = {name: i for i, name in enumerate(vf_features.FEATURE_NAMES)}
        stages = [[index[name] for name in stage] for stage in vf_features.STAGES]
        rest = [[i for later in stages[s + 1 :] for i in later] for s in range(len(stages))]
        return EarlyExit(
            model=self,
            weights=tuple(tuple(float(w[i]) for i in stage) for stage in stages),
            rest_top=tuple(float(np.sum(top[r])) for r in rest),
            rest_abs=tuple(float(np.sum(np.abs(top[r]))) for r in rest),
            bias=self._b,
            threshold=threshold,
            order=np.array([i for stage in stages for i in stage]),
            limit=exit_limit(threshold),
        )


_AMP = vf_features.STAGES[0].index("log_amplitude")  # the amplitude gate is decided at the first stage


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def exit_limit(threshold: float) -> float:
    """The threshold's logit, just lowered (by 1e-9 of its size): a bound of the log-odds at or above
    it cannot score below the threshold, so the early exit calls ``sigmoid`` only below it."""
    if not threshold > 0.0:
        return -math.inf  # every probability reaches it
    if not threshold < 1.0:
        return math.inf  # sigmoid decides (it rounds to 1.0 from ~37 up)
    logit = math.log(threshold / (1.0 - threshold))
    return logit - 1e-9 * (1.0 + abs(logit))


@dataclass(frozen=True, slots=True)
class EarlyExit:
    """Exact early exit of the model for one window length and threshold.

    After each stage of ``vf_features.stages``, the log-odds so far plus the most the features not yet
    computed can add (``rest_top``, from their bounds and the weights' signs) is an upper bound of
    the step's log-odds.  When even that bound scores below the threshold, the step is not VF-like
    whatever the rest would be, so the rest is not computed.  The bound is checked with a margin of
    1e-9 of the magnitudes summed (rounding of the full dot product is ~1e-15 of them), so the
    decision is the full model's, bit for bit; only ``probability`` is then an upper bound.
    """

    model: VfModel
    weights: tuple[tuple[float, ...], ...]  # per stage, the folded weights of its features
    rest_top: tuple[float, ...]  # per stage, the most the later stages can add to the log-odds
    rest_abs: tuple[float, ...]  # per stage, the magnitudes of those terms (for the rounding margin)
    bias: float
    threshold: float
    order: npt.NDArray[np.intp]  # FEATURE_NAMES position of each staged value
    limit: float  # log-odds below which the sigmoid test is worth making (``exit_limit``)

    def probability(
        self, staged: Iterator[tuple[float, ...]], floor: float, *, full: bool = False
    ) -> tuple[float, bool]:
        """(probability, exact) of one window from its staged features.  Exact, or -- unless ``full`` --
        an upper bound below the threshold when the later stages could not lift the step to it.
        A window whose log10 RMS is below ``floor`` scores 0 (never VF), as before any model."""
        prob, exact, _ = self.scored(staged, floor, full=full)
        return prob, exact

    def scored(
        self, staged: Iterator[tuple[float, ...]], floor: float, *, full: bool = False
    ) -> tuple[float, bool, FloatArray | None]:
        """``probability``, and the feature vector (``FEATURE_NAMES`` order) where every feature was
        computed (None where the step was decided before: the exit or the amplitude floor)."""
        z = self.bias
        mass = abs(z)
        values: list[float] = []
        last = -1 if full else len(self.weights) - 1
        limit = self.limit
        for s, stage in enumerate(staged):
            values += stage
            if s == 0:
                amp = stage[_AMP]
                if not amp >= floor:
                    return 0.0, True, None
                if not amp <= vf_features.MAX_LOG_AMPLITUDE:
                    break  # beyond what the bounds hold for: score everything
            if s >= last:
                break
            # The bound only has to be an upper bound: its sum's order does not matter (the margin
            # covers rounding), so the terms are summed in C (map/sum), not in a Python loop.
            terms = list(map(mul, self.weights[s], stage))
            z += sum(terms)
            mass += sum(map(abs, terms))
            top = z + self.rest_top[s]
            bound = top + 1e-9 * (1.0 + mass + self.rest_abs[s])
            # Log-odds first (no sigmoid at the stages that go on); the sigmoid test, the exit's
            # criterion, only where the bound is below the threshold's logit.
            if bound < limit and sigmoid(bound) < self.threshold:
                return sigmoid(top), False, None
        values.extend(v for stage in staged for v in stage)
        f = np.empty(len(values))
        f[self.order] = values
        return self.model.score(f), True, f


def load_model(path: Path = MODEL_PATH) -> VfModel:
    """Read a model file; raises ValueError when it does not fit the features computed here."""
    doc = json.loads(path.read_text())
    names = tuple(doc["features"])
    if names != vf_features.FEATURE_NAMES:
        raise ValueError(f"{path}: model features {names} differ from {vf_features.FEATURE_NAMES}")
    model = VfModel(
        mean=tuple(float(v) for v in doc["mean"]),
        scale=tuple(float(v) for v in doc["scale"]),
        weights=tuple(float(v) for v in doc["weights"]),
        bias=float(doc["bias"]),
    )
    if not len(model.mean) == len(model.scale) == len(model.weights) == len(names):
        raise ValueError(f"{path}: coefficient lengths do not match {len(names)} features")
    return model


@cache
def default_model() -> VfModel:
    return load_model()


@dataclass(frozen=True, slots=True)
class VfParams:
    window_s: float = 4.0
    hop_s: float = 1.0
    threshold: float = 0.8  # model probability above which a step is VF-like
    # The trees' probability a step the logistic model calls VF-like needs to stay VF-like.  0.6 from
    # bench/vf_tree_study.py (leave-records-out on vfdb): 0.6-0.7 gain the most Sp_second with the
    # logistic model's episode sensitivity; 0.7, chosen inside every fold, misses one more clean
    # episode when trained on every record (what ships), 0.6 does not.
    confirm_threshold: float = 0.6
    # VF-like steps among the last ``raise_of`` that start an episode.  7 of 8 was chosen with
    # bench/vf_sweep.py and train_vf_model.py --episodes on vfdb: of the points keeping the
    # leave-records-out episode sensitivity >= 95 %, the fewest false seconds and episodes.
    raise_steps: int = 7
    raise_of: int = 8
    clear_steps: int = 8  # VF-free steps in a row that end an episode
    min_amplitude_mv: float = 0.05  # RMS below which a window is never VF (flat line, very fine VF)


@fast_init  # one per second per channel
@dataclass(frozen=True, slots=True)
class VfStep:
    end_index: int  # exclusive end of the window scored
    # The model's probability.  When ``exact`` is False the step was decided without computing it
    # in full, and this is only what was known: an upper bound, below the threshold (the early
    # exit), or ``UNSCORED`` (nan: the organised-rhythm veto held, and nothing was computed).
    # ``check_every_step`` (bench/vf_sweep.py, to replay other thresholds) makes every step exact.
    probability: float
    vf_like: bool
    recent_peak_mv: float  # largest band-passed magnitude over the last step: is there any signal?
    organised: bool = False  # the organised-rhythm veto held at this step (asked at every step)
    exact: bool = True
    # The trees' probability (``vf_trees``), computed only where ``probability`` reaches the
    # threshold (every step scored in full under ``check_every_step``); nan where not computed.
    confirmation: float = math.nan
    # The step's waveform is an artefact over the patient's own rhythm (``native_rhythm``): asked
    # only where the step would be VF-like, and of every step under ``check_every_step``.
    artefact: bool = False


@dataclass(frozen=True, slots=True)
class VfChange:
    """An episode starts (``active``) or ends at the step closing at ``index``."""

    index: int
    active: bool
    onset_index: int  # for a start: first VF-like step's window end; for an end: the episode's start


@dataclass(slots=True)
class VfOutput:
    steps: list[VfStep] = field(default_factory=list)
    changes: list[VfChange] = field(default_factory=list)


class VfDetector:
    def __init__(
        self,
        fs: float,
        params: VfParams | None = None,
        model: VfModel | None = None,
        first_index: int = 0,
        trees: VfTrees | None = None,
    ) -> None:
        self.fs = fs
        self.params = p = params or VfParams()
        self.model = model or default_model()
        self.trees = trees or default_trees()
        self.decimate = decimation(fs)
        self.fs_features = fs / self.decimate
        self.window = window_length(self.fs_features, p)
        self.hop = max(1, round(p.hop_s * self.fs_features))
        self._band = SosFilter.design(feature_sos(fs))
        self._ring = np.zeros(self.window)
        self._raw: list[FloatArray] = []  # input samples not yet filtered
        self._raw_pending = 0
        self._next_raw = (self.hop - 1) * self.decimate + 1  # input samples that complete the next step
        self._raw_seen = 0  # input samples filtered so far
        self._seen = 0  # decimated samples since the start
        self._first = first_index
        self._recent: deque[bool] = deque(maxlen=p.raise_of)
        self._recent_ends: deque[int] = deque(maxlen=p.raise_of)
        self._free = 0
        self.active = False
        self.onset_index = 0
        # Every step scored in full (an exact probability) and its veto asked: for replays of
        # recorded steps at other thresholds (bench/vf_sweep.py).
        self.check_every_step = False
        self._bridged_until = -(2**62)  # samples before it may be a bridged gap's line (``bridged``)
        self._exit = self.model.early_exit(self.window, self.fs_features, p.threshold)
        self._floor = float(np.log10(p.min_amplitude_mv))

    def feed(
        self,
        samples_mv: FloatArray,
        organised: Callable[[int], bool] | None = None,
        artefact: Callable[[int], bool] | None = None,
    ) -> VfOutput:
        """Add samples; ``organised(end_index)``, when given, says whether the beats found up to a
        step's end show an organised rhythm there, which no VF-like score overrides;
        ``artefact(end_index)``, asked only of a step that would be VF-like, whether its waveform
        is an artefact over a rhythm of the patient's own (``native_rhythm``): then it is not."""
        out = VfOutput()
        if len(samples_mv) == 0:
            return out
        # Raw samples wait until a step is complete, then are filtered and decimated in one go:
        # the per-block cost is an append (the filter state makes any split give the same output).
        self._raw.append(samples_mv)
        self._raw_pending += len(samples_mv)
        k = self.decimate
        while self._raw_seen + self._raw_pending >= self._next_raw:
            need = self._next_raw - self._raw_seen
            if len(self._raw) == 1:
                chunk, own = self._raw[0], False  # the caller's array: filtered on a copy
            else:
                chunk, own = concatenate(self._raw), True
            rest = chunk[need:]
            self._raw = [rest] if len(rest) else []
            self._raw_pending = len(rest)
            y = self._filter(chunk[:need], own)[(-self._raw_seen) % k :: k]
            self._raw_seen += need
            self._seen += len(y)
            self._shift_in(y)
            if self._seen >= self.window:
                self._step(self._first + (self._seen - 1) * k + 1, out, organised, artefact)
            self._next_raw = ((self._seen // self.hop + 1) * self.hop - 1) * k + 1
        return out

    def _filter(self, x: FloatArray, own: bool) -> FloatArray:
        """The band-pass of the next samples, advancing its state: an array of our own (a
        concatenation) is filtered in place, without a copy; the caller's array is left alone."""
        return self._band.run_in_place(x) if own else self._band.run(x)

    def _shift_in(self, y: FloatArray) -> None:
        """Append the newest decimated samples to the window ring (in place: no new array a step)."""
        ring, m = self._ring, len(y)
        if m >= len(ring):
            ring[:] = y[len(y) - len(ring) :]
        elif m:
            ring[:-m] = ring[m:]
            ring[-m:] = y

    def suppress(self, end_index: int) -> list[VfChange]:
        """The signal is not ECG (flat, saturated, artefact): no episode may start or go on."""
        self._recent.clear()
        self._recent_ends.clear()
        if not self.active:
            return []
        self.active = False
        self._free = 0
        return [VfChange(end_index, False, self.onset_index)]

    def resume(self, onset_index: int) -> None:
        """Go on with an episode that was on when the samples broke off (a gap, a restart): the
        steps after the break end it (``clear_steps`` VF-free ones, or ``suppress``), or keep it."""
        self.active = True
        self.onset_index = onset_index
        self._free = 0

    def _step(
        self,
        end: int,
        out: VfOutput,
        organised: Callable[[int], bool] | None,
        artefact: Callable[[int], bool] | None = None,
    ) -> None:
        p = self.params
        full = self.check_every_step
        # The veto is asked first: where it holds (most seconds of an ordinary rhythm) the step is
        # not VF-like whatever the waveform would score, so no feature is computed.
        vetoed = organised is not None and not full and organised(end)
        confirmation = math.nan
        if vetoed:
            prob, exact = UNSCORED, False
        else:
            prob, exact, f = self._exit.scored(vf_features.stages(self._ring, self.fs_features), self._floor, full=full)
            # The trees only where the logistic model already says VF-like (under 1 step in 1,000
            # on mitdb, clean or noisy), unless every step is to be scored.
            if f is not None and (full or prob >= p.threshold):
                confirmation = self.trees.probability(f)
            vetoed = organised is not None and full and organised(end)
        vf_like = prob >= p.threshold and confirmation >= p.confirm_threshold and not vetoed
        # Asked of every step under ``check_every_step``, as the veto is, so that replays at other
        # thresholds find its answer wherever they need it.
        native = (vf_like or full) and artefact is not None and artefact(end)
        vf_like = vf_like and not native
        # The largest magnitude, read where argmax finds it: the same double as maximum.reduce
        # (and NaN where it gives NaN), without the reduction's set-up (~5k instructions).
        mags = np.abs(self._ring[-self.hop :])
        recent = float(mags[mags.argmax()])
        out.steps.append(VfStep(end, prob, vf_like, recent, vetoed, exact, confirmation, native))
        if not vf_like and not self.active and end - self.window * self.decimate < self._bridged_until:
            return  # no episode on: a window holding a bridged gap's line says nothing against VF (``bridged``)
        change = self.decide(end, vf_like)
        if change is not None:
            out.changes.append(change)

    def bridged(self, until_index: int) -> None:
        """The samples fed up to ``until_index`` end with a straight line across a short gap
        (``EcgChannel._bridge``).  With no episode on, a step whose window holds some of it
        counts when VF-like, the line notwithstanding, but not when it is not: the line is not
        the patient's rhythm, and a link losing a frame every few seconds would keep VF from
        being raised.  During an episode every step counts, toward the clear too: kept from
        counting there, an alarm outlived its VF by tens of seconds under a lossy link and held
        off the asystole that followed it (vfdb, 2 % of blocks lost: 2 of 9 asystole episodes
        raised, 7 when those steps count; ``bench/ecg_asystole.py --lose 0.02``)."""
        self._bridged_until = until_index

    def decide(self, end: int, vf_like: bool) -> VfChange | None:
        """The episode hysteresis for one step's verdict.  Public so that a replay of recorded steps
        (``bench/vf_sweep.py``) runs exactly the streaming decision with other parameters."""
        p = self.params
        self._recent.append(vf_like)
        self._recent_ends.append(end)
        if not self.active:
            if sum(self._recent) >= p.raise_steps:
                self.active = True
                self._free = 0
                self.onset_index = next(e for e, v in zip(self._recent_ends, self._recent, strict=True) if v)
                return VfChange(end, True, self.onset_index)
        elif vf_like:
            self._free = 0
        else:
            self._free += 1
            if self._free >= p.clear_steps:
                self.active = False
                self._recent.clear()
                self._recent_ends.clear()
                return VfChange(end, False, self.onset_index)
        return None


def decimation(fs: float) -> int:
    """Features are computed at about 80-160 Hz whatever the input rate (VF lives below 10 Hz;
    the 12-30 Hz share must stay visible): this keeps the detector cheap at 500 or 1000 Hz."""
    return max(1, int(fs // FEATURE_RATE_HZ))


def window_length(fs_features: float, p: VfParams) -> int:
    return max(int(2 * fs_features) + 1, round(p.window_s * fs_features))


def feature_sos(fs: float) -> FloatArray:
    """1-30 Hz band-pass plus a 35 Hz low-pass: removes wander and keeps aliasing down before decimation."""
    return np.vstack((butter2_bandpass(*BAND_HZ, fs), butter2_lowpass(ANTI_ALIAS_HZ, fs)))


def batch_features(x_mv: FloatArray, fs: float, params: VfParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features of every step of a whole signal, as the streaming detector computes them.

    Returns (window end indices in input samples, feature matrix).  Used to train the model offline.
    """
    p = params or VfParams()
    k = decimation(fs)
    fsd = fs / k
    window = window_length(fsd, p)
    hop = max(1, round(p.hop_s * fsd))
    y = SosFilter.design(feature_sos(fs)).run(np.asarray(x_mv, dtype=np.float64))[::k]
    counts = np.arange(hop, len(y) + 1, hop)
    counts = counts[counts >= window]
    feats = np.asarray([vf_features.compute(y[c - window : c], fsd).as_array() for c in counts])
    return (counts - 1) * k + 1, feats.reshape(len(counts), len(vf_features.FEATURE_NAMES))
