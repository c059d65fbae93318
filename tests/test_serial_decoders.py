"""Serial decoders: worked vectors from the reference, status mapping, fixtures with injected faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.serial import contec, ecg_frontend, masimo, nonin
from drivers.serial.framing import Dropped
from drivers.serial.protocols import PROTOCOLS
from drivers.serial.simulate import OxiSecond, nonin8_stream, nonin75_stream
from gateway.pipeline import is_valid
from gateway.records import ClockQuality, DeviceEvent, DeviceFlag, DeviceState, SampleBlock, Vital, VitalReading

FIX = Path(__file__).resolve().parent.parent / "hil_fixtures" / "serial"

# Reference: pez-globo/pufferfish TestNoninOEM3.cpp, via ../shared/reference/serial-oximeters.md
NONIN2_VECTOR = bytes.fromhex("0181010083" "01800148CA" "01800161E3" "01800130B2")  # fmt: skip
# The vector's four frames completed to a full packet with 21 frames of FLOAT 0: a packet is read
# only once all 25 of its frames are in (see PacketAssembler).
NONIN2_PACKET = NONIN2_VECTOR + bytes.fromhex("0180010082") * 21


def frames_of(items: list[Any]) -> list[Any]:
    return [it for it in items if not isinstance(it, Dropped)]


def decode_all(protocol: str, data: bytes) -> list[Any]:
    d = PROTOCOLS[protocol].make_decoder()
    return d.feed(data) + d.finish()


# -- Nonin ---------------------------------------------------------------------------------------


def test_nonin2_reference_vector() -> None:
    items = decode_all("nonin2", NONIN2_PACKET)
    frames = [it for it in items if isinstance(it, nonin.NoninFrame)]
    packets = [it for it in items if isinstance(it, nonin.NoninPacket)]
    assert [f.value for f in frames[:4]] == [0x00, 0x48, 0x61, 0x30]
    assert frames[0].sync and not frames[1].sync
    assert packets == [nonin.NoninPacket(pulse_rate=72, spo2=97, flags=frozenset())]
    assert not any(isinstance(it, Dropped) for it in items)


def test_nonin2_vector_after_garbage_and_a_lost_byte() -> None:
    broken = NONIN2_PACKET[:7] + NONIN2_PACKET[8:]  # frame 1 loses a byte
    items = decode_all("nonin2", b"\x01\x80\x99\xfe" + broken + NONIN2_PACKET)
    packets = [it for it in items if isinstance(it, nonin.NoninPacket)]
    # The first packet lost its HR LSB frame: no packet from it; the intact copy decodes.
    assert packets == [nonin.NoninPacket(72, 97, frozenset())]
    assert sum(d.count for d in items if isinstance(d, Dropped)) == 4 + 9


def test_nonin2_packet_with_a_vanished_frame_is_discarded_not_misread() -> None:
    # Frame 1 (HR LSB) vanishes whole at a frame boundary: no byte is dropped, every checksum is good.
    shifted = NONIN2_PACKET[:5] + NONIN2_PACKET[10:]
    items = decode_all("nonin2", NONIN2_PACKET + shifted + NONIN2_PACKET)
    assert not any(isinstance(it, Dropped) for it in items)
    packets = [it for it in items if isinstance(it, nonin.NoninPacket)]
    # Read naively, the shifted packet would say HR 97, SpO2 48 (the revision byte).
    assert packets == [nonin.NoninPacket(72, 97, frozenset())] * 2


def test_nonin2_packet_short_of_a_frame_before_one_without_its_sync_is_discarded_not_misread() -> None:
    # Frame 1 (HR LSB) vanishes, then the next packet's sync frame: counted from the first sync,
    # the 25th frame is the next packet's second, and no checksum or dropped byte says so.
    short = NONIN2_PACKET[:5] + NONIN2_PACKET[10:]
    unsynced = NONIN2_PACKET[5:]
    items = decode_all("nonin2", NONIN2_PACKET + short + unsynced + NONIN2_PACKET + NONIN2_PACKET)
    assert not any(isinstance(it, Dropped) for it in items)
    packets = [it for it in items if isinstance(it, nonin.NoninPacket)]
    # Read at the 25th frame, the short packet would say HR 97 (the SpO2 byte), SpO2 48 (the revision).
    assert packets == [nonin.NoninPacket(72, 97, frozenset())] * 3


def test_nonin2_bad_checksum_is_never_a_frame() -> None:
    bad = bytearray(NONIN2_VECTOR)
    bad[9] ^= 0x01  # checksum of frame 1
    frames = [it for it in decode_all("nonin2", NONIN2_VECTOR + bytes(bad)) if isinstance(it, nonin.NoninFrame)]
    assert [f.value for f in frames] == [0x00, 0x48, 0x61, 0x30, 0x00, 0x61, 0x30]


def test_nonin_hr_uses_two_msb_bits_and_seven_lsb_bits() -> None:
    assert nonin.hr_from_bytes(0x01, 0x05) == 133
    assert nonin.hr_from_bytes(0x03, 0x7F) == nonin.HR_MISSING
    assert nonin.hr_from_bytes(0xFC, 0xC8) == 72  # bits outside the fields are ignored


def test_nonin2_status_bits_and_missing_values() -> None:
    off = nonin75_stream([OxiSecond(None, None, sensor_off=True)], fmt=2)
    items = decode_all("nonin2", off)
    pkt = next(it for it in items if isinstance(it, nonin.NoninPacket))
    assert pkt.pulse_rate is None and pkt.spo2 is None
    assert DeviceFlag.SENSOR_OFF in pkt.flags
    assert nonin.status_flags(0x80 | 0x20 | 0x10 | 0x08) == {
        DeviceFlag.ARTIFACT,
        DeviceFlag.OUT_OF_TRACK,
        DeviceFlag.SENSOR_FAULT,
    }
    assert nonin.status_flags(0x80 | 0x04) == {DeviceFlag.LOW_PERFUSION}
    assert nonin.status_flags(0x80 | 0x06) == {DeviceFlag.MARGINAL_PERFUSION}
    assert nonin.status_flags(0x80 | 0x02) == frozenset()


def test_nonin7_sixteen_bit_pleth() -> None:
    frame = bytes((0x81, 0xC3, 0x50, 0x00))
    data = (frame + bytes((sum(frame) & 0xFF,))) * 3
    frames = [it for it in decode_all("nonin7", data) if isinstance(it, nonin.NoninFrame)]
    assert [f.pleth for f in frames] == [0xC350] * 3


def test_nonin8_vector_hr_bits_battery_and_flags() -> None:
    # STATUS 0x81: HR bit 7; HR LSB 5 -> 133 /min; SpO2 98; STATUS2 battery low.
    items = decode_all("nonin8", bytes((0x81, 0x05, 0x62, 0x01, 0xC3, 0x7F, 0x7F, 0x0A)))
    f1, f2 = frames_of(items)
    assert (f1.pulse_rate, f1.spo2) == (133, 98)
    assert f1.flags == {DeviceFlag.BATTERY_LOW}
    assert (f2.pulse_rate, f2.spo2) == (None, None)
    assert f2.flags == {DeviceFlag.SENSOR_OFF, DeviceFlag.SENSOR_FAULT, DeviceFlag.BATTERY_CRITICAL}


def test_nonin8_translator_emits_battery_and_sensor_events_once() -> None:
    secs = (
        [OxiSecond(97, 70)] * 2
        + [OxiSecond(None, None, sensor_off=True)] * 3
        + [OxiSecond(96, 71, battery_low=True)] * 2
    )
    items = decode_all("nonin8", nonin8_stream(secs))
    tr = nonin.Nonin8Translator("dev")
    out = tr.translate(items, 100.0, ClockQuality.SYNCED)
    events = [(e.state, e.time) for e in out if isinstance(e, DeviceEvent)]
    assert events == [(DeviceState.SENSOR_OFF, 96.0), (DeviceState.SENSOR_ON, 99.0), (DeviceState.BATTERY_LOW, 99.0)]
    spo2 = [r for r in out if isinstance(r, VitalReading) and r.vital is Vital.SPO2]
    assert [r.value for r in spo2] == [97, 97, None, None, None, 96, 96]
    assert [r.time for r in spo2] == [94.0, 95.0, 96.0, 97.0, 98.0, 99.0, 100.0]  # back-dated 1 s per frame


def test_nonin2_translator_pleth_blocks_vitals_and_gap() -> None:
    data = nonin75_stream([OxiSecond(97, 72)] * 2, fmt=2)
    cut = data[:500] + data[505:]  # frame 100 vanishes whole: it is detected only as a lost place
    broken = cut[:250] + cut[253:]  # frame 50 loses 3 bytes: dropped bytes -> a gap of one sample
    items = decode_all("nonin2", broken)
    tr = nonin.Nonin75Translator("dev")
    out = tr.translate(items, 1000.0, ClockQuality.SYNCED) + tr.flush()
    blocks = [b for b in out if isinstance(b, SampleBlock)]
    assert all(b.channel == "pleth" and b.unit == "1" and b.sample_rate_hz == 75.0 for b in blocks)
    gaps = [b for b in blocks if b.gap_before]
    assert len(gaps) == 1 and gaps[0].first_index == 51
    assert sum(len(b.samples) for b in blocks) == 150 - 2
    vitals = [r for r in out if isinstance(r, VitalReading)]
    assert {(r.vital, r.value, r.unit) for r in vitals} == {(Vital.SPO2, 97.0, "%"), (Vital.PULSE_RATE, 72.0, "/min")}


# -- Contec --------------------------------------------------------------------------------------


def test_contec_reference_vectors() -> None:
    p1, p2 = frames_of(decode_all("contec", bytes.fromhex("C53C064861853C460562")))
    assert (p1.pulse_rate, p1.spo2, p1.beep, p1.pleth, p1.signal, p1.bargraph) == (72, 97, True, 60, 5, 6)
    assert (p2.pulse_rate, p2.spo2, p2.beep) == (133, 98, False)


def test_contec_flags_and_missing() -> None:
    (p,) = frames_of(decode_all("contec", bytes((0x90, 0x00, 0x70, 0x7F, 0x7F))))
    assert p.pulse_rate is None and p.spo2 is None
    assert p.flags == {DeviceFlag.SENSOR_OFF, DeviceFlag.SENSOR_FAULT, DeviceFlag.SEARCHING}


def test_contec_lost_byte_is_dropped_not_misread() -> None:
    good = bytes.fromhex("C53C064861")
    items = decode_all("contec", good * 5 + good[:2] + good[3:] + good * 5)
    assert len(frames_of(items)) == 10
    assert [d.count for d in items if isinstance(d, Dropped)] == [4]


def test_contec_makes_no_vitals_from_noise() -> None:
    """No checksum: one random 5-byte window in 32 has the sync bits right.  Noise must still
    never lock the decoder on (before the lock needed agreeing packets: ~1,900 packets and ~1,700
    vitals per MB)."""
    noise = np.random.default_rng(11).bytes(300_000)
    dec = contec.contec_decoder()
    items = [it for i in range(0, len(noise), 4096) for it in dec.feed(noise[i : i + 4096])]
    out = contec.ContecTranslator("dev").translate(items, 1.0, ClockQuality.SYNCED)
    assert frames_of(items) == []
    assert [r for r in out if isinstance(r, VitalReading)] == []
    assert dec.stats.dropped_bytes > len(noise) - 20  # all but the last few, still being looked at


# -- Masimo --------------------------------------------------------------------------------------

OPENICE_LINE = (
    b"12/01/05 11:56:29 SN=0123456789 SPO2=098% BPM=240 PI=20.00% SPCO=01.0% SPMET=00.5% "
    b"DESAT=01 PIDELTA=-02 PVI=027 ALARM=0000 EXC=000820"
)


def test_masimo_reference_line() -> None:
    line = masimo.parse_line(OPENICE_LINE)
    assert line.values == {Vital.SPO2: 98.0, Vital.PULSE_RATE: 240.0, Vital.PERFUSION_INDEX: 20.0}
    assert line.device_time == "12/01/05 11:56:29" and line.serial == "0123456789"
    # EXC 0x820 = 0x800 SET mode (no flag) + 0x20 sensor off, per the reference's bit table.
    assert line.exc == 0x820 and line.flags == {DeviceFlag.SENSOR_OFF}


def test_masimo_exc_and_alarm_bits() -> None:
    line = masimo.parse_line(b"12/01/05 11:56:30 SPO2=---% BPM=--- PI=--.--% ALARM=0012 EXC=00040D")
    assert line.values == {Vital.SPO2: None, Vital.PULSE_RATE: None, Vital.PERFUSION_INDEX: None}
    assert line.flags == {
        DeviceFlag.SENSOR_OFF,
        DeviceFlag.LOW_PERFUSION,
        DeviceFlag.SEARCHING,
        DeviceFlag.LOW_SIGNAL_QUALITY,
        DeviceFlag.DEVICE_ALARM,
    }
    assert line.alarms == ["spo2_low", "active"]


def test_masimo_unknown_keys_from_newer_firmware_are_ignored() -> None:
    line = masimo.parse_line(OPENICE_LINE + b" SPHB=13.2 SPOC=--- RESVD=--- EXC1=00000000 FUTURE=whatever")
    assert line.values[Vital.SPO2] == 98.0


@pytest.mark.parametrize(
    "bad",
    [
        b"12/01/05 11:56:29 SPO2=0x8% BPM=072",  # corrupted value
        b"12/01/05 11:56:29 SPO2=198% BPM=072",  # impossible value
        b"2/01/05 11:56:29 SPO2=098% BPM=072",  # lost a byte of the date
        b"12/01/05 11:56:29 SN=1 FOO=2",  # no known key
        b"12/01/05 11:56:29 SPO2=098\xff% BPM=072",
        b"12/01/05 11:56:29 SPO2098% BPM=072",
    ],
)
def test_masimo_rejects_untrustworthy_lines(bad: bytes) -> None:
    with pytest.raises(ValueError):
        masimo.parse_line(bad)
    items = decode_all("masimo", bad + b"\r\n" + OPENICE_LINE + b"\r\n")
    assert len(frames_of(items)) == 1
    assert [d.count for d in items if isinstance(d, Dropped)] == [len(bad) + 2]


RADICAL5_LINE = b"09/15/10 15:10:29 SPO2=097% BPM=064 PI=11.82% ALARM=20 EXC=800"  # MD PnP's example


@pytest.mark.parametrize(
    "lost",
    [
        (b"BPM=240", b"BPM=40"),  # would read 40 /min
        (b"SPO2=098%", b"SPO2=98%"),
        (b"PI=20.00%", b"PI=2.00%"),
        (b"PI=20.00%", b"PI=20.0%"),
    ],
)
def test_masimo_a_value_short_of_a_byte_is_rejected_not_read_as_another(lost: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="fixed width"):
        masimo.parse_line(OPENICE_LINE.replace(*lost))


def test_masimo_a_status_short_of_a_digit_is_rejected_by_the_widths_the_device_sends() -> None:
    searching = OPENICE_LINE.replace(b"EXC=000820", b"EXC=000808")  # pulse search, SpO2 not settled
    damaged = searching.replace(b"EXC=000808", b"EXC=00080")  # read alone: 0x80, no pulse-search bit
    items = decode_all("masimo", b"\r\n".join([searching, damaged, searching]) + b"\r\n")
    lines = [it for it in items if isinstance(it, masimo.MasimoLine)]
    assert [line.exc for line in lines] == [0x808, 0x808]
    (drop,) = [it for it in items if isinstance(it, Dropped)]
    assert "ALARM/EXC of 4/5 characters, not 4/6" in drop.reason and drop.count == len(damaged) + 2


def test_masimo_radical5_widths_are_learnt_and_another_device_is_taken_after_three_lines() -> None:
    r7 = OPENICE_LINE.replace(b"EXC=000820", b"EXC=000000")
    stream = [RADICAL5_LINE] * 2 + [r7] * 4
    items = decode_all("masimo", b"\r\n".join(stream) + b"\r\n")
    lines = [it for it in items if isinstance(it, masimo.MasimoLine)]
    # The Radical-5's two lines, then the Radical-7's from its third in a row on.
    assert [line.widths for line in lines] == [(2, 3), (2, 3), (4, 6), (4, 6)]
    assert lines[0].alarm == 0x20 and lines[0].exc == 0x800 and lines[0].flags == frozenset()
    assert sum(isinstance(it, Dropped) for it in items) == 2


@pytest.mark.parametrize(
    ("exc", "flag"),
    [
        (0x2, DeviceFlag.SENSOR_FAULT),  # defective sensor
        (0x10, DeviceFlag.ARTIFACT),  # interference
        (0x40, DeviceFlag.ARTIFACT),  # ambient light
        (0x80, DeviceFlag.SENSOR_FAULT),  # unrecognised sensor
        (0x100, DeviceFlag.SENSOR_FAULT),  # incompatible sensor
        (0x1000, DeviceFlag.SENSOR_OFF),  # no cable
        (0x10000, DeviceFlag.SENSOR_FAULT),  # defective cable
        (0x20000, DeviceFlag.SEARCHING),  # sensor calibrating
        (0x40000, DeviceFlag.SENSOR_FAULT),  # sensor life expired
    ],
)
def test_masimo_exceptions_that_void_the_value_are_flags_the_pipeline_rejects(exc: int, flag: DeviceFlag) -> None:
    line = masimo.parse_line(OPENICE_LINE.replace(b"EXC=000820", b"EXC=%06X" % exc))
    assert line.flags == {flag}
    out = masimo.MasimoTranslator("ox").translate([line], 1.0, ClockQuality.SYNCED)
    (spo2,) = [r for r in out if isinstance(r, VitalReading) and r.vital is Vital.SPO2]
    assert spo2.value == 98.0 and not is_valid(spo2)


def test_masimo_garbage_glued_before_a_line_keeps_the_line() -> None:
    items = decode_all("masimo", b"\x00\xff junk 99/" + OPENICE_LINE + b"\r\n")
    assert len(frames_of(items)) == 1
    assert [d.reason for d in items if isinstance(d, Dropped)] == ["garbage before line"]


# -- ECG front-end -------------------------------------------------------------------------------


def test_crc16_ccitt_false_check_value() -> None:
    assert ecg_frontend.crc16(b"123456789") == 0x29B1


def test_ecg_frame_worked_example() -> None:
    # The example frame written out in docs/ecg-frontend-protocol.md.
    frame = ecg_frontend.encode_frame(7, np.array([100, -100, 32767, -32768]), 250, 5000)
    assert frame.hex(" ") == "a5 5a 12 00 07 00 fa 00 88 13 01 04 64 00 9c ff ff 7f 00 80 93 49"
    (f,) = decode_all("ecgstream", frame)
    assert f.seq == 7 and f.sample_rate_hz == 250 and f.lsb_nv == 5000
    assert f.samples[:, 0].tolist() == [100, -100, 32767, -32768]


def test_ecg_int24_two_channels_roundtrip() -> None:
    counts = np.array([[8388607, -8388608], [-1, 1], [123456, -654321]])
    (f,) = decode_all("ecgstream", ecg_frontend.encode_frame(1, counts, 500, 48, width=3, flags=0x01))
    assert f.samples.tolist() == counts.tolist()
    out = ecg_frontend.EcgTranslator("dev").translate([f], 10.0, ClockQuality.SYNCED)
    blocks = [b for b in out if isinstance(b, SampleBlock)]
    assert [b.channel for b in blocks] == ["ecg", "ecg2"]
    assert blocks[0].samples.tolist() == pytest.approx([8388607 * 0.048, -0.048, 123456 * 0.048])
    assert any(isinstance(e, DeviceEvent) and e.state is DeviceState.SENSOR_OFF and e.detail == "lead off" for e in out)


def test_ecg_frame_flags_are_carried_by_the_frame_blocks() -> None:
    # b0 lead off, b1 battery low, b2 saturated: every block of a frame (one per channel) carries
    # its frame's flags, and lead off is also an event, once per change.
    lead_off, low, saturated = ecg_frontend.FLAG_LEAD_OFF, ecg_frontend.FLAG_BATTERY_LOW, ecg_frontend.FLAG_SATURATED
    bits = [0, lead_off, lead_off | saturated, saturated | low, 0]
    frames = [ecg_frontend.encode_frame(seq, np.zeros((10, 2), int), 250, 1000, flags=b) for seq, b in enumerate(bits)]
    items = decode_all("ecgstream", b"".join(frames))
    out = ecg_frontend.EcgTranslator("dev").translate(items, 50.0, ClockQuality.SYNCED)
    blocks = [b for b in out if isinstance(b, SampleBlock)]
    lead, sat, low = DeviceFlag.LEAD_OFF, DeviceFlag.SATURATED, DeviceFlag.BATTERY_LOW
    expected = [set(), {lead}, {lead, sat}, {sat, low}, set()]
    assert [(b.channel, set(b.flags)) for b in blocks] == [(c, f) for f in expected for c in ("ecg", "ecg2")]
    assert [(e.state, e.detail) for e in out if isinstance(e, DeviceEvent)] == [
        (DeviceState.SENSOR_OFF, "lead off"),
        (DeviceState.SENSOR_ON, ""),
        (DeviceState.BATTERY_LOW, ""),
        (DeviceState.BATTERY_OK, ""),
    ]


def test_ecg_frame_ending_in_a5_read_alone_drops_nothing() -> None:
    # The CRC's last byte is 0xA5 in 1 frame of 256; each frame arriving in a read of its own,
    # that byte was kept as a possible half sync word and counted as dropped at the next read.
    frames = (ecg_frontend.encode_frame(0, np.full(4, v), 250, 1000) for v in range(4096))
    ending_a5 = next(f for f in frames if f[-1] == 0xA5)
    d = ecg_frontend.EcgDecoder()
    items = d.feed(ending_a5) + d.feed(ecg_frontend.encode_frame(1, np.zeros(4, int), 250, 1000)) + d.finish()
    assert [type(it) for it in items] == [ecg_frontend.EcgFrame, ecg_frontend.EcgFrame]
    assert (d.stats.frames, d.stats.dropped_bytes, d.stats.drops) == (2, 0, 0)


def test_ecg_sequence_gap_marks_the_block_and_counts_lost_samples() -> None:
    frames = [ecg_frontend.encode_frame(seq, np.arange(10), 250, 1000) for seq in (65534, 65535, 0, 3, 4)]
    items = decode_all("ecgstream", b"".join(frames))
    tr = ecg_frontend.EcgTranslator("dev")
    blocks = [b for b in tr.translate(items, 50.0, ClockQuality.SYNCED) if isinstance(b, SampleBlock)]
    assert [(b.first_index, b.gap_before) for b in blocks] == [
        (0, False),
        (10, False),
        (20, False),
        (50, True),
        (60, False),
    ]
    # Continuous blocks sit on one sample grid.
    assert blocks[1].first_sample_time == pytest.approx(blocks[0].first_sample_time + 10 / 250)


def test_ecg_garbage_with_fake_sync_and_header_does_not_lose_frames() -> None:
    frames = [ecg_frontend.encode_frame(s, np.full(16, s), 250, 1000) for s in range(5)]
    fake = b"\xa5\x5a\x12\x00\x00\x00\xfa\x00\xe8\x03\x04\x80"  # plausible header announcing 1024 bytes
    data = frames[0] + fake + b"".join(frames[1:])
    items = decode_all("ecgstream", data)
    assert [f.seq for f in frames_of(items)] == [0, 1, 2, 3, 4]


# -- Fixtures with injected faults ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "clean", "faulty", "frame_len"),
    [
        ("nonin2", "nonin2_patient-a_220s.bin", "nonin2_faults.bin", 5),
        ("contec", "contec_patient-a_220s.bin", "contec_faults.bin", 5),
        ("ecgstream", "ecgstream_mitdb119.bin", "ecgstream_faults.bin", 50),
    ],
)
def test_fault_fixture_loses_only_the_damaged_frames(protocol: str, clean: str, faulty: str, frame_len: int) -> None:
    faults = json.loads((FIX / faulty).with_suffix(".json").read_text())["faults"]
    clean_frames = [
        it
        for it in frames_of(decode_all(protocol, (FIX / clean).read_bytes()))
        if not isinstance(it, nonin.NoninPacket)
    ]
    items = decode_all(protocol, (FIX / faulty).read_bytes())
    damaged: set[int] = set()
    end = len(clean_frames)
    for f in faults:
        if f["kind"] in ("lose_byte", "flip"):
            damaged.add(f["frame"])
        elif f["kind"] == "lose_frames":
            damaged.update(range(f["frame"], f["frame"] + f["frames"]))
        elif f["kind"] == "unplug":
            end = f["frame"]
    expected = [fr for k, fr in enumerate(clean_frames[:end]) if k not in damaged]

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, ecg_frontend.EcgFrame):
            return bool(a.seq == b.seq and np.array_equal(a.samples, b.samples))
        return bool(a == b)

    got = [it for it in frames_of(items) if not isinstance(it, nonin.NoninPacket)]
    assert len(got) == len(expected)
    assert all(same(a, b) for a, b in zip(got, expected, strict=True))
    garbage = sum(f["bytes"] for f in faults if f["kind"] == "garbage")
    lost_byte_frames = sum(frame_len - 1 for f in faults if f["kind"] == "lose_byte")
    flipped = sum(frame_len for f in faults if f["kind"] == "flip")
    unplug = sum(f["bytes_kept"] for f in faults if f["kind"] == "unplug")
    dropped = sum(d.count for d in items if isinstance(d, Dropped))
    assert dropped == garbage + lost_byte_frames + flipped + unplug


def test_masimo_fault_fixture() -> None:
    clean = frames_of(decode_all("masimo", (FIX / "masimo_patient-a_100s.txt").read_bytes()))
    got = frames_of(decode_all("masimo", (FIX / "masimo_faults.txt").read_bytes()))
    faults = json.loads((FIX / "masimo_faults.json").read_text())["faults"]
    unplug = next(f["frame"] for f in faults if f["kind"] == "unplug")
    flipped = {f["frame"] for f in faults if f["kind"] == "flip"}
    # Every intact line up to the unplug comes through; the flipped one (byte 5 of the date) never does.
    assert all(line in got for k, line in enumerate(clean[:unplug]) if k not in flipped | {20})
    assert all(clean[k] not in got for k in flipped)
    assert len(got) <= unplug


def test_ecg_fault_fixture_gap_accounting() -> None:
    items = decode_all("ecgstream", (FIX / "ecgstream_faults.bin").read_bytes())
    tr = ecg_frontend.EcgTranslator("dev")
    blocks = [b for b in tr.translate(items, 1e9, ClockQuality.SYNCED) if isinstance(b, SampleBlock)]
    gaps = {b.first_index: b.gap_before for b in blocks if b.gap_before}
    # Frames 120 and 200 were damaged (1 frame each), frames 300-303 vanished: 18 samples per frame.
    assert sorted(gaps) == [121 * 18, 201 * 18, 304 * 18]
    # Every surviving frame sits at its own place in the sample index: nothing glued, nothing shifted.
    assert [b.first_index for b in blocks] == [k * 18 for k in range(550) if k not in {120, 200, 300, 301, 302, 303}]


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_chunked_feed_equals_whole_feed(protocol: str) -> None:
    data = next(FIX.glob(f"{protocol}_*")).read_bytes()[:4000] + b"\x00\xff\x01\x80" + b"\xa5\x5a\x12" * 3
    data += next(FIX.glob(f"{protocol}_*")).read_bytes()[:2000]
    whole = decode_all(protocol, data)
    rng = np.random.default_rng(1)
    d = PROTOCOLS[protocol].make_decoder()
    parts: list[Any] = []
    i = 0
    while i < len(data):
        n = int(rng.integers(1, 40))
        parts += d.feed(data[i : i + n])
        i += n
    parts += d.finish()

    def key(x: Any) -> Any:
        if isinstance(x, ecg_frontend.EcgFrame):
            return (x.seq, x.samples.tolist())
        if isinstance(x, Dropped):
            return None
        return x

    assert [key(x) for x in frames_of(parts)] == [key(x) for x in frames_of(whole)]

    def dropped(xs: list[Any]) -> int:
        return sum(x.count for x in xs if isinstance(x, Dropped))

    assert dropped(parts) == dropped(whole)


def test_translators_are_exported_for_every_protocol() -> None:
    for name, info in PROTOCOLS.items():
        tr = info.make_translator(name)
        assert tr.translate([], 0.0, ClockQuality.SYNCED) == []


def test_contec_translator_decimates_vitals_but_reports_finger_out_at_once() -> None:
    stream = b"".join(bytes.fromhex("C53C064861") if k < 90 else bytes((0x90, 0, 0x40, 0x7F, 0x7F)) for k in range(100))
    tr = contec.ContecTranslator("dev")
    out = tr.translate(decode_all("contec", stream), 10.0, ClockQuality.SYNCED)
    spo2 = [r for r in out if isinstance(r, VitalReading) and r.vital is Vital.SPO2]
    assert [r.value for r in spo2] == [97.0, 97.0, None]
    assert [e.state for e in out if isinstance(e, DeviceEvent)] == [DeviceState.SENSOR_OFF]
