"""Pacing pulses the front-end marks are held out of the ECG (``gateway.signal.pace_blanking``):
worked examples, the same samples whatever the packing, the alarms a pacemaker's spikes hid, and
the marks' way in through the ``ecgstream`` protocol's version 2 frames and a real pty."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.serial import ecg_frontend, simulate
from drivers.serial.decode_cli import decode_stream
from drivers.serial.driver import SerialDriver
from drivers.serial.ecg_frontend import EcgDecoder, EcgFrame, encode_frame
from drivers.serial.settings import EcgStreamSettings
from gateway import evidence_codec
from gateway.config.processing import AlarmSection
from gateway.pipeline import PatientSetup, Pipeline, PipelineOutput
from gateway.records import AlarmEvent, AlarmRecord, EvidenceRecord, SampleBlock
from gateway.signal import pace_blanking
from gateway.signal.ecg_channel import EcgChannel
from tests.serial_pty import Pty
from tests.synthetic_ecg import FIXTURES, standstill
from tests.test_serial_driver import collect, ctx

PACING_RATE = 70.0  # /min


def test_a_pulse_is_held_at_the_sample_before_it() -> None:
    x = np.array([0.0, 0.1, 0.2, 3.0, 2.0, 0.3, 0.4, 0.5])
    out, until = pace_blanking.blank(x, 100, [103], 3, before=None, hold_until=0)
    assert out.tolist() == [0.0, 0.1, 0.2, 0.2, 0.2, 0.2, 0.4, 0.5]
    assert until == 106
    assert x[3] == 3.0  # the caller's samples are left as they were


def test_a_hold_goes_on_into_the_next_block_at_the_value_it_held() -> None:
    first, until = pace_blanking.blank(np.array([0.0, 0.2, 5.0]), 0, [2], 3, before=None, hold_until=0)
    assert first.tolist() == [0.0, 0.2, 0.2] and until == 5
    second, until = pace_blanking.blank(np.array([4.0, 0.6, 0.7]), 3, [], 3, before=0.2, hold_until=until)
    assert second.tolist() == [0.2, 0.2, 0.7] and until == 5


def test_a_pulse_on_a_blocks_first_sample_holds_the_previous_blocks_last() -> None:
    out, until = pace_blanking.blank(np.array([5.0, 1.0, 0.3]), 10, [10], 2, before=0.25, hold_until=0)
    assert out.tolist() == [0.25, 0.25, 0.3] and until == 12


def test_nothing_to_hold_at_a_streams_first_sample_and_no_pulse_no_copy() -> None:
    x = np.array([5.0, 1.0, 0.3])
    out, until = pace_blanking.blank(x, 0, [0], 2, before=None, hold_until=0)
    assert out.tolist() == [5.0, 1.0, 0.3] and until == 0
    same, _ = pace_blanking.blank(x, 3, [1, 9], 2, before=0.3, hold_until=0)  # pulses outside the block
    assert same is x


def test_blank_width_covers_the_pulse_at_any_rate() -> None:
    assert pace_blanking.blank_width(250.0) == 3  # 12 ms
    assert pace_blanking.blank_width(500.0) == 6
    assert pace_blanking.blank_width(100.0) == 2  # never under the pulse's sample and the next


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=12),
    st.lists(st.integers(0, 199), max_size=12, unique=True),
    st.integers(2, 6),
)
def test_the_same_samples_however_the_device_packs_them(sizes: list[int], pulses: list[int], width: int) -> None:
    x = np.sin(np.arange(200) * 0.3)
    pulses = sorted(pulses)
    whole, _ = pace_blanking.blank(x, 0, pulses, width, before=None, hold_until=0)
    parts, pos, until, before = [], 0, 0, None
    for size in itertools.cycle(sizes):
        if pos >= len(x):
            break
        piece, until = pace_blanking.blank(x[pos : pos + size], pos, pulses, width, before=before, hold_until=until)
        parts.append(piece)
        before = float(piece[-1])
        pos += len(piece)
    assert np.array_equal(np.concatenate(parts), whole)


def record(rel: str) -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(FIXTURES / rel), channels=[0])
    return np.nan_to_num(np.asarray(rec.p_signal[:, 0], dtype=np.float64)), float(rec.fs)


def paced(
    x: np.ndarray, fs: float, start_s: float, end_s: float, mv: float, wide: int = 2
) -> tuple[np.ndarray, list[int]]:
    """``x`` with a pacemaker's spikes of ``mv`` and ``wide`` samples at 70 /min from ``start_s``
    to ``end_s``, and where they are (what a front-end with pace detection reports)."""
    y = x.copy()
    at = [round(t * fs) for t in np.arange(start_s, end_s, 60.0 / PACING_RATE)]
    for i in at:
        y[i : i + wide] += mv
    return y, at


def marked_blocks(
    x: np.ndarray, fs: float, pulses: list[int], sizes: list[int] | None = None, unit: str = "mV", t0: float = 0.0
) -> Iterator[SampleBlock]:
    """``x`` in blocks (100 ms, or ``sizes`` in turn), each carrying the ``pulses`` (sample
    indices) within it as its pace marks, as the ``ecgstream`` translator gives them."""
    marks = np.asarray(pulses, dtype=np.int64)
    a = 0
    for size in itertools.cycle(sizes or [round(0.1 * fs)]):
        if a >= len(x):
            return
        lo, hi = np.searchsorted(marks, [a, a + size])
        pace = tuple(int(p) - a for p in marks[lo:hi])
        yield SampleBlock("strap", "ecg", fs, t0 + a / fs, x[a : a + size], unit, first_index=a, pace=pace)
        a += size


def rhythm_alarms(
    x: np.ndarray, fs: float, pulses: list[int], sizes: list[int] | None = None
) -> list[tuple[float, str, bool]]:
    channel, got = EcgChannel("strap"), []
    for block in marked_blocks(x, fs, pulses, sizes):
        got += [(round(e.time, 1), e.condition, e.active) for e in channel.feed(block).rhythm]
    return got


@pytest.mark.parametrize(("mv", "wide"), [(1.0, 2), (3.0, 1), (3.0, 2), (10.0, 2)])
def test_marked_pacing_spikes_no_longer_hide_fibrillation(mv: float, wide: int) -> None:
    """A pacemaker that does not sense VF paces on through it.  Its spikes through 426's VF (from
    30 s) kept the VF alarm off: the R-peak detector counts them as a regular rhythm.  Marked by the
    front-end, they are held out and the alarm comes when it comes without them."""
    x, fs = record("ecg_vf/vfdb_426_615s")
    clean = rhythm_alarms(x, fs, [])
    assert clean == [(38.8, "ventricular_fibrillation", True)]
    y, at = paced(x, fs, 0.3, len(x) / fs, mv, wide)
    assert rhythm_alarms(y, fs, []) == []
    assert rhythm_alarms(y, fs, at) == clean


def test_marked_pulses_the_heart_does_not_answer_leave_a_standstill_an_asystole() -> None:
    """Pacing that fails to capture during a standstill (119, no QRS from 40 to 70 s): unmarked,
    the 3 mV spikes read as a rhythm at 70 /min and no asystole alarm comes."""
    x, fs, last, _ = standstill(40.0, 70.0)
    x = x / 1000.0
    y, at = paced(x, fs, 40.5, 70.0, 3.0)
    assert [c for c in rhythm_alarms(y, fs, []) if c[1] == "asystole"] == []
    got = rhythm_alarms(y, fs, at)
    assert got == rhythm_alarms(x, fs, [])
    assert got[0][1:] == ("asystole", True) and got[0][0] - last <= 10.0


def test_captured_paced_beats_are_still_beats() -> None:
    """A spike 80 ms before every QRS peak of 119, before the complex's onset (each one captured):
    held out, the beats found are the ones found without spikes, within a sample."""
    x, fs = record("ecg/mitdb_119_0s")
    x = x[: round(120 * fs)]
    ann = wfdb.rdann(str(FIXTURES / "ecg/mitdb_119_0s"), "atr")
    qrs = [int(r) for r in ann.sample if 1.0 * fs < r < len(x) - fs]
    at = [r - round(0.08 * fs) for r in qrs]
    y = x.copy()
    for i in at:
        y[i : i + 2] += 3.0

    def beats(z: np.ndarray, pulses: list[int]) -> tuple[list[int], int]:
        """The beats found, and the pulses the channel held out."""
        channel, got = EcgChannel("strap"), []
        for block in marked_blocks(z, fs, pulses):
            got += channel.feed(block, defer=False).beats
        return got, channel.pacing_pulses

    (plain, _), (held, pulses) = beats(x, []), beats(y, at)
    assert len(held) == len(plain) and max(abs(a - b) for a, b in zip(held, plain, strict=True)) <= 1
    assert pulses == len(at)


def test_version_2_frame_worked_example() -> None:
    """The protocol document's version 1 example with pulses at samples 1 and 3."""
    frame = encode_frame(7, np.array([100, -100, 32767, -32768]), 250, 5000, pace=[1, 3])
    assert frame.hex(" ") == "a5 5a 22 00 07 00 fa 00 88 13 01 04 64 00 9c ff ff 7f 00 80 02 01 03 c0 20"
    (f,) = EcgDecoder().feed(frame)
    assert isinstance(f, EcgFrame) and f.pace == (1, 3) and f.samples[:, 0].tolist() == [100, -100, 32767, -32768]
    no_pulse = encode_frame(8, np.array([1, 2]), 250, 5000, pace=[])
    assert no_pulse[2] >> 4 == 2 and EcgDecoder().feed(no_pulse)[0].pace == ()  # type: ignore[union-attr]


def test_a_bad_pace_list_drops_its_frame_and_says_why() -> None:
    """A CRC-valid frame whose pulse lies beyond its samples (a firmware bug): dropped whole, as
    "bad pace list", and the next frame is read."""
    bad = bytearray(encode_frame(9, np.array([1, 2, 3]), 250, 5000, pace=[0]))
    bad[-3] = 3  # the offset: 3 of 3 samples
    bad[-2:] = ecg_frontend.crc16(bytes(bad[2:-2])).to_bytes(2, "little")
    good = encode_frame(10, np.array([4, 5]), 250, 5000, pace=[1])
    items = EcgDecoder().feed(bytes(bad) + good)
    assert [type(i).__name__ for i in items] == ["Dropped", "EcgFrame"]
    assert items[0].reason == "bad pace list" and items[0].count == len(bad)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="pace"):
        encode_frame(1, np.array([1, 2]), 250, 5000, pace=[1, 1])
    # A count beyond any pacing is a false sync: one byte dropped, as for a bad header.
    fake = bytearray(encode_frame(11, np.array([1]), 250, 5000, pace=[]))
    fake[-3] = ecg_frontend.MAX_PACE + 1
    decoder = EcgDecoder()
    assert decoder.feed(bytes(fake)) == []
    assert [d.reason for d in decoder.finish()] == ["bad header"]  # type: ignore[union-attr]
    assert decoder.stats.dropped_bytes == len(fake)


async def vf_alarms_through_a_pty(tmp_path: Path, data: bytes) -> tuple[list[AlarmEvent], int]:
    """The VF alarm events the pipeline makes of what the real serial driver reads of ``data``
    written into a pseudo-terminal, and the pacing pulses the driver's blocks carry."""
    pty = Pty(tmp_path / "serial" / "by-id" / "usb-ecg-frontend")
    keys = itertools.count(1)
    setup = PatientSetup("p-1", AlarmSection().limits, {"ecg-1": "ecgstream"})
    pipeline = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(keys)}", patients={"p-1": setup})
    try:
        async with SerialDriver(ctx(tmp_path, "ecg-1"), EcgStreamSettings(id="ecg-1", port=str(pty.link))) as drv:

            async def feeder() -> None:
                await pty.feed(data, 4096, 0.002)
                await asyncio.sleep(0.2)
                pty.unplug()

            task = asyncio.create_task(feeder())
            readings, _ = await collect(drv)
            await task
    finally:
        pty.unplug()
    out = PipelineOutput()
    for r in readings:
        out.extend(pipeline.feed("p-1", r))
    vf = [r.event for r in out.records if isinstance(r, AlarmRecord) and r.condition == "ventricular_fibrillation"]
    return vf, sum(len(r.pace) for r in readings if isinstance(r, SampleBlock))


async def test_a_paced_patients_fibrillation_through_a_pty_raises_the_alarm(tmp_path: Path) -> None:
    """The whole way: a front-end sends 426 with 3 mV spikes at 70 /min over a pseudo-terminal;
    the real serial driver reads it and the pipeline raises VF when the frames mark the pulses
    (version 2), and does not when they do not (version 1)."""
    x, fs = record("ecg_vf/vfdb_426_615s")
    y, at = paced(x, fs, 0.3, len(x) / fs, 3.0)
    counts = np.round(y * 1000.0 / 5.0).astype(np.int64)  # 5 uV per count
    marked = b"".join(simulate.ecg_frames(counts, int(fs), 5000, per_frame=25, pace=np.asarray(at)))
    assert await vf_alarms_through_a_pty(tmp_path, marked) == ([AlarmEvent.RAISED], len(at))
    unmarked = b"".join(simulate.ecg_frames(counts, int(fs), 5000, per_frame=25))
    assert await vf_alarms_through_a_pty(tmp_path, unmarked) == ([], 0)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(1, 90), min_size=1, max_size=6))
def test_the_alarms_do_not_depend_on_the_packing_of_marked_blocks(sizes: list[int]) -> None:
    x, fs = record("ecg_vf/vfdb_426_615s")
    y, at = paced(x, fs, 0.3, len(x) / fs, 3.0)
    assert rhythm_alarms(y, fs, at, sizes) == [(38.8, "ventricular_fibrillation", True)]


def test_the_alarms_strip_marks_the_pacing_pulses_on_the_samples_as_received(tmp_path: Path) -> None:
    """The VF strip of a paced patient: the spikes are in its samples (what the device sent) and
    its ``pace`` marks each one; the PNG a person reads draws them."""
    x, fs = record("ecg_vf/vfdb_426_615s")
    y, at = paced(x, fs, 0.3, len(x) / fs, 3.0)
    keys = itertools.count(1)
    setup = PatientSetup("p-1", AlarmSection().limits, {"strap": "ecgstream"})
    pipeline = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(keys)}", patients={"p-1": setup})
    out = PipelineOutput()
    for block in marked_blocks(y * 1000.0, fs, at, unit="uV", t0=1.78e9):
        out.extend(pipeline.feed("p-1", block))
    (strip,) = [r for r in out.records if isinstance(r, EvidenceRecord) and r.condition == "ventricular_fibrillation"]
    first = round((strip.start_time.timestamp() - 1.78e9) * fs)
    assert strip.pace == [p - first for p in at if first <= p < first + strip.n_samples]
    assert len(strip.pace) >= 10
    samples = evidence_codec.decode(strip.data, strip.sample_format, strip.n_samples) * strip.resolution
    assert all(samples[p] - samples[p - 1] > 2.0 for p in strip.pace)  # the 3 mV spikes, as sent
    if importlib.util.find_spec("matplotlib") is None:  # the optional 'plots' extra
        return
    from gateway.evidence_plot import render  # noqa: PLC0415

    png = tmp_path / "strip.png"
    render(strip, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_decode_prints_the_pulses_of_a_version_2_capture() -> None:
    """``iomt-gateway decode ecgstream`` on a capture: a block's pulses, as the technician sees them."""
    data = encode_frame(0, np.array([1, 2, 3, 4]), 250, 5000, pace=[2]) + encode_frame(1, np.array([5, 6]), 250, 5000)
    objs = [o for o in decode_stream("ecgstream", io.BytesIO(data)) if o["kind"] == "samples"]
    assert [o.get("pace") for o in objs] == [[2], None]
