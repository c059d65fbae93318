"""Samples the ECG front-end flags lead off or saturated are no signal: no lethal-rhythm alarm nor
rate from them, one technical alarm per cause, and the monitoring back once the flag is gone.

With its lead off a front-end may output low, quiet noise (an AD8232 in AC lead-off mode): to
the rhythm rules that is a standstill, and unflagged it raises asystole.  The frames go through
the real ``ecgstream`` encoder, decoder and translator, so the device's own ``sensor_off`` event
comes with the flagged blocks, as from a serial port.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.serial.ecg_frontend import FLAG_LEAD_OFF, FLAG_SATURATED, EcgDecoder, EcgFrame, EcgTranslator, encode_frame
from gateway.config.processing import AlarmSection
from gateway.pipeline import NO_VALID_ECG, PatientSetup, Pipeline, PipelineOutput
from gateway.records import AlarmEvent, AlarmRecord, ClockQuality, DeviceFlag, SampleBlock, Vital
from gateway.signal.ecg_channel import EcgChannel
from gateway.signal.ecg_output import EcgOutput
from tests.synthetic_ecg import standstill
from tests.test_signal_pipeline import alarms, ecg_119

T0 = 1_780_000_000.0
LSB_NV = 5000  # MIT-BIH's 200 counts per mV: its samples are whole counts
OFF = (41.3, 81.3)  # seconds of the record the lead is off (from within a quality window)
RHYTHM = ("asystole", "ventricular_fibrillation", "ventricular_tachycardia")


def quiet_noise(x: np.ndarray, fs: float, span: tuple[float, float], rms_uv: float = 20.0) -> np.ndarray:
    """``x`` (uV) with ``span`` replaced by low noise: what a front-end gives with its lead off."""
    x = x.copy()
    seg = slice(int(span[0] * fs), int(span[1] * fs))
    x[seg] = np.random.default_rng(1).normal(0.0, rms_uv, seg.stop - seg.start)
    return x


def through_the_driver(x: np.ndarray, fs: float, span: tuple[float, float], flags: int) -> PipelineOutput:
    """``x`` (uV) sent as ecgstream frames of 0.1 s, those in ``span`` with ``flags``, decoded and
    translated as from the port, into a pipeline that raises "no data" after 10 s without data;
    the pipeline's clock ticks every second."""
    counter = itertools.count(1)
    setup = PatientSetup("p-a", AlarmSection().limits, {"strap": "ecgstream"}, no_data_s={"strap": 10.0})
    pl = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup})
    decoder, translator = EcgDecoder(), EcgTranslator("strap")
    counts = np.round(x * 1000.0 / LSB_NV).astype(np.int64)
    n = round(0.1 * fs)
    out = PipelineOutput()
    for seq, start in enumerate(range(0, len(x), n)):
        part = counts[start : start + n]
        flagged = span[0] * fs <= start < span[1] * fs
        frame = encode_frame(seq, part, round(fs), LSB_NV, flags=flags if flagged else 0)
        items = decoder.feed(frame)
        assert [type(it) for it in items] == [EcgFrame]
        t_last = T0 + (start + len(part) - 1) / fs  # the frame read as its last sample is taken
        for reading in translator.translate(items, t_last, ClockQuality.SYNCED):
            out.extend(pl.feed("p-a", reading))
        if start % round(fs) == 0:
            out.extend(pl.tick(t_last))
    out.extend(pl.flush(T0 + len(x) / fs + 1))
    return out


def rates(out: PipelineOutput, lo: float, hi: float) -> list[float]:
    return [r.value for r in out.accepted if r.vital is Vital.HEART_RATE and lo < r.time - T0 < hi and r.value]


def raised(out: PipelineOutput) -> set[str]:
    return {r.condition for r in out.records if isinstance(r, AlarmRecord) and r.event is AlarmEvent.RAISED}


def test_quiet_noise_with_the_lead_off_flag_raises_lead_off_not_asystole() -> None:
    x, fs = ecg_119(120.0)
    out = through_the_driver(quiet_noise(x, fs, OFF), fs, OFF, FLAG_LEAD_OFF)
    # One technical alarm, the device's own, from its first flagged frame to its first clean one.
    sensor = alarms(out, "sensor_off")
    assert [(a.event, round(a.time.timestamp() - T0, 1), a.detail) for a in sensor] == [
        (AlarmEvent.RAISED, OFF[0], "lead off"),
        (AlarmEvent.CLEARED, OFF[1], ""),
    ]
    assert raised(out) == {"sensor_off"}  # no asystole, VF, VT, "no valid ECG", nor "no data"
    assert rates(out, OFF[0], OFF[1]) == []
    # Back once the lead is: two good quality windows (8 s) after it, at the patient's rate.
    back = rates(out, OFF[1], OFF[1] + 10.0)
    assert len(back) >= 5 and all(50 < v < 90 for v in back)


def test_the_same_quiet_noise_unflagged_raises_asystole() -> None:
    # What the flag prevents: without it the noise is a standstill to the rhythm rules.
    x, fs = ecg_119(120.0)
    out = through_the_driver(quiet_noise(x, fs, OFF), fs, OFF, 0)
    assert [a.event for a in alarms(out, "asystole")] == [AlarmEvent.RAISED, AlarmEvent.CLEARED]
    assert alarms(out, "sensor_off") == []


def test_lead_off_and_saturated_together_raise_lead_off_alone() -> None:
    # A front-end whose lead is off often sits at its rail too: one cause, one alarm.
    x, fs = ecg_119(120.0)
    out = through_the_driver(quiet_noise(x, fs, OFF), fs, OFF, FLAG_LEAD_OFF | FLAG_SATURATED)
    assert raised(out) == {"sensor_off"}
    assert len(rates(out, OFF[1], OFF[1] + 10.0)) >= 5


def test_saturated_frames_raise_no_valid_ecg_and_no_rhythm_alarm() -> None:
    # No event says "saturated": it is a saturated quality window's alarm, raised at the first
    # whole window's length (4 s) of flagged samples and cleared after 4 good windows.
    x, fs = ecg_119(120.0)
    out = through_the_driver(quiet_noise(x, fs, OFF), fs, OFF, FLAG_SATURATED)
    tech = alarms(out, NO_VALID_ECG)
    assert [(a.event, round(a.time.timestamp() - T0, 1)) for a in tech] == [
        (AlarmEvent.RAISED, OFF[0] + 4.0),
        (AlarmEvent.CLEARED, OFF[1] + 16.0),
    ]
    assert tech[0].detail == "ecg: saturated"
    assert raised(out) == {NO_VALID_ECG}
    assert rates(out, OFF[0], OFF[1]) == []


def test_short_saturations_in_a_row_add_up_to_no_valid_ecg() -> None:
    # 1.5 s saturated every 2.5 s: no window is whole between them to be judged, so without
    # adding them up nothing would say the ECG is not being read.
    x, fs = ecg_119(120.0)
    spans = [(40.0 + 2.5 * k, 41.5 + 2.5 * k) for k in range(4)]
    mask = np.zeros(len(x), dtype=bool)
    for a, b in spans:
        mask[int(a * fs) : int(b * fs)] = True
    out = channel_decisions(EcgChannel("strap"), x / 1000.0, fs, mask, [len(x)])
    assert out.changes[0].valid is False and out.changes[0].detail == "saturated"
    assert out.changes[0].time - T0 == 43.5 + 2.5  # the 4 s counted end 1 s into the third run
    assert out.changes[0].onset_time == T0 + 40.0
    assert [c.valid for c in out.changes] == [False, True]
    assert not out.rhythm


def test_an_asystole_alarm_on_goes_on_across_a_lead_off_during_the_standstill() -> None:
    # The QRS stop at 40 s, asystole is raised by 50 s; the lead is off from 52 to 58 s and the
    # standstill goes on after it.  Ended at the lead-off, asystole could not be raised again
    # after it: the beat detection starts afresh with no last beat to count a standstill from.
    x, fs, _, first_back = standstill(40.0, 70.0)
    off = (52.0, 58.0)
    out = through_the_driver(quiet_noise(x, fs, off), fs, off, FLAG_LEAD_OFF)
    asystole = alarms(out, "asystole")
    assert [a.event for a in asystole] == [AlarmEvent.RAISED, AlarmEvent.CLEARED]
    assert asystole[0].time.timestamp() - T0 < off[0]
    assert asystole[1].time.timestamp() - T0 > first_back  # cleared by the beats, not the lead-off
    assert [a.event for a in alarms(out, "sensor_off")] == [AlarmEvent.RAISED, AlarmEvent.CLEARED]


# -- Chunk invariance ------------------------------------------------------------------------


def channel_decisions(
    ch: EcgChannel, x: np.ndarray, fs: float, saturated: np.ndarray, sizes: list[int], lead_off: slice = slice(0)
) -> EcgOutput:
    """Feed ``x`` (mV) in blocks of ``sizes`` (cycled), each also cut where a flag changes."""
    flags = np.zeros(len(x), dtype=np.int8)
    flags[saturated] = 1
    flags[lead_off] = 2
    total = EcgOutput()
    start = i = 0
    while start < len(x):
        end = min(len(x), start + sizes[i % len(sizes)])
        changes = np.flatnonzero(flags[start:end] != flags[start])
        if len(changes):
            end = start + int(changes[0])
        kind = int(flags[start])
        f = frozenset() if kind == 0 else frozenset({(DeviceFlag.SATURATED, DeviceFlag.LEAD_OFF)[kind - 1]})
        o = ch.feed(SampleBlock("strap", "ecg", fs, T0 + start / fs, x[start:end], "mV", first_index=start, flags=f))
        total.changes += o.changes
        total.readings += o.readings
        total.rhythm += o.rhythm
        total.unreadable += o.unreadable
        start, i = end, i + 1
    return total


def _decisions(o: EcgOutput) -> tuple[list[object], list[float]]:
    """Everything the channel decided, and when (times apart: they are compared to float precision)."""
    what: list[object] = [(c.valid, c.detail) for c in o.changes]
    what += [(r.vital, r.value) for r in o.readings]
    what += [(e.condition, e.active) for e in o.rhythm]
    times = [t for c in o.changes for t in (c.time, c.onset_time or 0.0)] + [r.time for r in o.readings]
    times += [t for e in o.rhythm for t in (e.time, e.onset_time)]
    return what, times + o.unreadable


_X, _FS = ecg_119(70.0)
_X_MV = quiet_noise(_X, _FS, (12.0, 22.0)) / 1000.0
_LEAD_OFF = slice(int(12 * _FS), int(22 * _FS))
_SATURATED = np.zeros(len(_X), dtype=bool)
for _a in (34.0, 36.5, 39.0):  # short saturations that add up (see above)
    _SATURATED[int(_a * _FS) : int((_a + 1.5) * _FS)] = True
_REFERENCE = channel_decisions(EcgChannel("strap"), _X_MV, _FS, _SATURATED, [len(_X)], _LEAD_OFF)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 2000), min_size=1, max_size=40))
def test_flagged_samples_read_the_same_however_they_are_packed(sizes: list[int]) -> None:
    got = channel_decisions(EcgChannel("strap"), _X_MV, _FS, _SATURATED, sizes, _LEAD_OFF)
    what, times = _decisions(got)
    ref_what, ref_times = _decisions(_REFERENCE)
    assert what == ref_what
    assert times == pytest.approx(ref_times, abs=1e-6)
    # The reference holds what is at stake: a raise for the saturations and its clear, the
    # stop of readings at the lead-off, and readings before and after each.
    assert [(c.valid, c.detail) for c in _REFERENCE.changes] == [(False, "saturated"), (True, "good")]
    assert [round(u - T0, 1) for u in _REFERENCE.unreadable] == [12.0, 34.0]
    hr = [r.time - T0 for r in _REFERENCE.readings if r.vital is Vital.HEART_RATE]
    assert any(t < 12 for t in hr) and any(22 < t < 34 for t in hr) and any(t > 50 for t in hr)
    assert not any(12 <= t < 22 or 34 <= t < 43 for t in hr)
