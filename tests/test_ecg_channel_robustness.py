"""Whatever a device sends, the ECG channel neither raises nor stops working.

The daemon catches an exception from the pipeline (``pipeline_error``), but a channel that raised
stays broken: every later block raised again, 10 times a second, and the patient's ECG had no
heart rate, VF or asystole detection until a restart.  Three such inputs were found by the
property test below, each fixed at its cause: a device whose sample count starts again at 0
(a Polar H10 after a reconnect: a new time line), an exact flat line (a front-end that sends
zeros with its lead off, unflagged: the VF features divided by a variance whose square was 0)
and impossible values (1e150 mV overflowed the kurtosis: now an unusable block).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.readings import DeviceFlag, SampleBlock, Vital
from gateway.signal.ecg_channel import EcgChannel, EcgOutput
from gateway.signal.ecg_filters import MAX_ABS_MV
from gateway.signal.ecg_quality import EcgQuality

FIXTURES = Path(__file__).resolve().parent.parent / "hil_fixtures" / "ecg"


def _record(name: str) -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(FIXTURES / name))
    return np.ascontiguousarray(rec.p_signal[:, 0], dtype=np.float64), float(rec.fs)


@pytest.fixture(scope="module")
def mitdb_119() -> tuple[np.ndarray, float]:
    return _record("mitdb_119_0s")


def _stream(ch: EcgChannel, x: np.ndarray, fs: float, first_index: int, t0: float) -> list[EcgOutput]:
    step = round(0.1 * fs)
    return [
        ch.feed(SampleBlock("d", "ecg", fs, t0 + a / fs, x[a : a + step], "mV", first_index=first_index + a))
        for a in range(0, len(x), step)
    ]


def _rates(outs: list[EcgOutput]) -> list[float]:
    return [r.value for o in outs for r in o.readings if r.vital is Vital.HEART_RATE and r.value is not None]


def test_a_sample_count_that_starts_again_at_zero_goes_on_with_the_rate(mitdb_119: tuple[np.ndarray, float]) -> None:
    x, fs = mitdb_119
    ch = EcgChannel("d")
    cut = round(60 * fs)
    before = _stream(ch, x[:cut], fs, 0, 1.7e9)
    # The strap reconnects: its new time line numbers the samples from 0 again, without a gap mark.
    after = _stream(ch, x[cut : 2 * cut], fs, 0, 1.7e9 + 60.0)
    assert _rates(before) and len(_rates(after)) > 40  # ~70 /min for a minute, the first seconds held
    assert all(50 < r < 90 for r in _rates(after)), _rates(after)
    assert not [c for o in after for c in o.changes if not c.valid]  # nothing to say: the ECG is good


def test_an_exact_flat_line_is_flat_for_as_long_as_it_lasts(mitdb_119: tuple[np.ndarray, float]) -> None:
    x, fs = mitdb_119
    ch = EcgChannel("d")
    _stream(ch, x[: round(30 * fs)], fs, 0, 0.0)
    # Ten minutes of zeros: the band-passed line decays into subnormals, then exact zeros.
    zeros = _stream(ch, np.zeros(round(600 * fs)), fs, round(30 * fs), 30.0)
    raised = [c for o in zeros for c in o.changes]
    assert [(c.valid, c.detail) for c in raised] == [(False, EcgQuality.FLAT.value)]
    assert not [e for o in zeros for e in o.rhythm]  # a flat line is no asystole: no signal
    back = _stream(ch, x[round(30 * fs) : round(90 * fs)], fs, round(630 * fs), 630.0)
    assert [c.valid for o in back for c in o.changes] == [True] and _rates(back)


@pytest.mark.parametrize("value", [1e150, -1e300, 2 * MAX_ABS_MV])
def test_impossible_values_are_an_unusable_block(mitdb_119: tuple[np.ndarray, float], value: float) -> None:
    x, fs = mitdb_119
    ch = EcgChannel("d")
    outs = _stream(ch, x[: round(20 * fs)], fs, 0, 0.0)
    bad = x[round(20 * fs) : round(20.1 * fs)].copy()
    bad[3] = value
    out = ch.feed(SampleBlock("d", "ecg", fs, 20.0, bad, "mV", first_index=round(20 * fs)))
    assert out.dropped_blocks == 1 and ch.dropped == 1
    # The next good block starts afresh and the rate comes back.
    outs = _stream(ch, x[round(20.1 * fs) : round(50 * fs)], fs, round(20.1 * fs), 20.1)
    assert _rates(outs)
    # Up to the limit is a signal (a front-end's DC offset, a large artefact), not a decoding error.
    edge = x[round(50 * fs) : round(50.1 * fs)].copy()
    edge[3] = MAX_ABS_MV
    assert ch.feed(SampleBlock("d", "ecg", fs, 50.0, edge, "mV", first_index=round(50 * fs))).dropped_blocks == 0


_X, _FS = _record("vfdb_424_1200s")  # VF, asystole and a rhythm between: every detector has work
_SINUS, _SINUS_FS = _record("mitdb_119_0s")

_OP = st.one_of(
    st.tuples(st.just("samples"), st.integers(1, 800)),
    st.tuples(st.just("nan"), st.integers(1, 300)),
    st.tuples(st.just("scale"), st.sampled_from([1e6, 1e150, -1e300, 1e-300, 0.0])),
    st.tuples(st.just("rate"), st.sampled_from([0.0, -250.0, 49.0, 125.0, 130.0, 250.0, 500.0, 1e9, math.nan])),
    st.tuples(st.just("unit"), st.sampled_from(["uV", "V", "mmHg", "", "mV"])),
    st.tuples(st.just("jump"), st.integers(-5000, 5000)),
    st.tuples(st.just("flag"), st.sampled_from([DeviceFlag.LEAD_OFF, DeviceFlag.SATURATED])),
    st.tuples(st.just("pace"), st.lists(st.integers(-50, 900), max_size=6)),
    st.tuples(st.just("dtype"), st.sampled_from(["int16", "float32", "2d", "bool"])),
    st.tuples(st.just("time"), st.sampled_from([math.nan, math.inf, -1.0])),
    st.tuples(st.just("flat"), st.integers(1, 3000)),
    st.tuples(st.just("gap"), st.just(0)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_OP, min_size=1, max_size=60), st.integers(0, len(_X) - 1))
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_no_block_sequence_breaks_the_channel(ops: list[tuple[str, object]], start: int) -> None:
    ch = EcgChannel("d")
    pos, index, fs, unit = start, 0, _FS, "mV"
    for kind, arg in ops:
        n, time, flags, pace, gap = 250, 1.7e9 + index / _FS, frozenset[DeviceFlag](), (), kind == "gap"
        if kind == "samples":
            n = int(arg)  # type: ignore[call-overload]
        elif kind == "rate":
            fs = float(arg)  # type: ignore[arg-type]
        elif kind == "unit":
            unit = str(arg)
        elif kind == "jump":
            index = max(0, index + int(arg))  # type: ignore[call-overload]
        elif kind == "flag":
            flags = frozenset({arg})  # type: ignore[arg-type]
        elif kind == "pace":
            pace = tuple(arg)  # type: ignore[arg-type]
        elif kind == "time":
            time = float(arg)  # type: ignore[arg-type]
        s: np.ndarray = np.resize(np.roll(_X, -pos)[: max(n, 1)], n).copy()
        if kind == "nan":
            s[:: int(arg)] = np.nan  # type: ignore[call-overload]
        elif kind == "scale":
            s = s * float(arg)  # type: ignore[arg-type]
        elif kind == "flat":
            s = np.zeros(int(arg))  # type: ignore[call-overload]
        elif kind == "dtype":
            s = {"int16": (s * 200).astype(np.int16), "float32": s.astype(np.float32), "2d": np.stack([s, s]),
                 "bool": s > 0}[str(arg)]  # fmt: skip
        block = SampleBlock("d", "ecg", fs, time, s, unit, first_index=index, gap_before=gap, flags=flags, pace=pace)
        out = ch.feed(block)
        for r in out.readings:
            assert r.value is None or math.isfinite(r.value), r
            if r.vital is Vital.HEART_RATE and r.value is not None:
                assert 0 < r.value < 400, r
        pos += s.shape[-1]
        index += s.shape[-1]
    # And it still works: a minute of a sinus rhythm, contiguous, gives its rate.
    after = _stream(ch, _SINUS[: round(60 * _SINUS_FS)], _SINUS_FS, index + 10_000, 1.8e9)
    assert _rates(after)
