"""Nonin OEM serial output: Data Formats #2 and #7 (75 frames/s) and #8 (one frame per second).

Formats (``../shared/reference/serial-oximeters.md``):

* #2: ``01 | STATUS | PLETH | FLOAT | CHK``; #7: ``STATUS | PLETH_MSB | PLETH_LSB | FLOAT | CHK``.
  CHK is the sum of the first four bytes mod 256, STATUS bit 7 is always 1 and bit 0 marks the
  first frame of a 25-frame packet.  FLOAT carries the packet's numbers one byte per frame:
  frame 0 HR MSB, 1 HR LSB, 2 SpO2, 3 firmware revision (the others are not decoded here).
  HR 511 and SpO2 127 mean "no value".
* #8: ``STATUS | HR_LSB | SPO2 | STATUS2``, no checksum: frames are found by STATUS bit 7 set and
  bit 7 clear in the other three bytes, and checked for plausible values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.serial.framing import Dropped, FixedFramer, FramerStats
from drivers.serial.oximetry import StateEvents, oximeter_vitals
from drivers.serial.waveform import WaveformAssembler, back_dated_times
from gateway.readings import (
    ClockQuality,
    DeviceFlag,
    Reading,
    SampleBlock,
)

FRAME_RATE_HZ = 75.0
FRAMES_PER_PACKET = 25
HR_MISSING = 511
SPO2_MISSING = 127
HR_MAX = 321  # Nonin's displayed range is 18-321 /min

# STATUS bits of formats #2/#7
_SNSD = 0x40  # sensor disconnect
_ARTF = 0x20
_OOT = 0x10
_SNSA = 0x08  # sensor alarm: the device says its data are unusable
_RPRF = 0x04  # red perfusion
_GPRF = 0x02  # green perfusion
_SYNC = 0x01


def hr_from_bytes(msb: int, lsb: int) -> int:
    """Nonin's 9-bit heart rate: two high bits from MSB, seven from LSB."""
    return ((msb & 0x03) << 7) | (lsb & 0x7F)


def status_flags(status: int) -> frozenset[DeviceFlag]:
    """Flags of a format #2/#7 STATUS byte."""
    flags: set[DeviceFlag] = set()
    if status & _SNSD:
        flags.add(DeviceFlag.SENSOR_OFF)
    if status & _ARTF:
        flags.add(DeviceFlag.ARTIFACT)
    if status & _OOT:
        flags.add(DeviceFlag.OUT_OF_TRACK)
    if status & _SNSA:
        flags.add(DeviceFlag.SENSOR_FAULT)
    perf = status & (_RPRF | _GPRF)
    if perf == _RPRF:
        flags.add(DeviceFlag.LOW_PERFUSION)
    elif perf == (_RPRF | _GPRF):  # yellow
        flags.add(DeviceFlag.MARGINAL_PERFUSION)
    return frozenset(flags)


@dataclass(frozen=True, slots=True)
class NoninFrame:
    """One 1/75 s frame of format #2 or #7."""

    status: int
    pleth: int
    value: int  # the FLOAT byte

    @property
    def sync(self) -> bool:
        return bool(self.status & _SYNC)


@dataclass(frozen=True, slots=True)
class NoninPacket:
    """HR and SpO2 assembled from frames 0-2 of a packet (None = device says no value)."""

    pulse_rate: int | None
    spo2: int | None
    flags: frozenset[DeviceFlag]


def _parse2(buf: bytes | bytearray, i: int) -> NoninFrame | None:
    b0, st, pl, fl, ck = buf[i], buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]
    if b0 != 0x01 or not st & 0x80 or (b0 + st + pl + fl) & 0xFF != ck:
        return None
    return NoninFrame(st, pl, fl)


def _parse7(buf: bytes | bytearray, i: int) -> NoninFrame | None:
    st, msb, lsb, fl, ck = buf[i], buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]
    if not st & 0x80 or (st + msb + lsb + fl) & 0xFF != ck:
        return None
    return NoninFrame(st, (msb << 8) | lsb, fl)


@dataclass
class PacketAssembler:
    """Assembles the 25 frames after a sync frame into HR and SpO2.

    A packet is emitted with the next packet's sync frame, not with its own 3rd frame: only then
    is it known that none of its 25 frames went missing.  A frame can vanish whole (a USB buffer
    overrun at a frame boundary) without a single dropped byte to show for it; counting 25 frames
    from one sync frame to the next is what catches that.  Counting to 25 alone does not: a packet
    that lost a frame, followed by one that lost its sync frame, reaches 25 with the next packet's
    second frame, and would be read with its bytes shifted (HR from the SpO2 byte, SpO2 from the
    revision byte).  Such a packet is discarded.  A drop report also loses the place until the next
    sync frame.  At the end of a stream (``end``) a packet of 25 frames has nothing after it to
    contradict it, and is emitted.
    """

    index: int | None = None
    revision: int | None = None
    _msb: int = 0
    _lsb: int = 0
    _spo2: int = 0
    _flags: frozenset[DeviceFlag] = frozenset()
    _complete: NoninPacket | None = None  # 25 frames read: emitted if a sync frame comes next

    def frame(self, f: NoninFrame) -> NoninPacket | None:
        complete, self._complete = self._complete, None
        packet = None
        if f.sync:
            packet = complete
            self.index = 0
            self._flags = frozenset()
        elif self.index is not None:
            self.index += 1
            if self.index >= FRAMES_PER_PACKET:  # no sync where one was due: a frame went missing
                self.index = None
        if self.index is None:
            return None
        self._flags |= status_flags(f.status)
        if self.index == 0:
            self._msb = f.value
        elif self.index == 1:
            self._lsb = f.value
        elif self.index == 2:
            self._spo2 = f.value
        elif self.index == 3:
            self.revision = f.value
        elif self.index == FRAMES_PER_PACKET - 1:
            hr = hr_from_bytes(self._msb, self._lsb)
            spo2 = self._spo2
            self._complete = NoninPacket(
                pulse_rate=None if hr == HR_MISSING or hr > HR_MAX else hr,
                spo2=None if spo2 == SPO2_MISSING or spo2 > 100 else spo2,
                flags=self._flags,
            )
        return packet

    def lost_place(self) -> None:
        self.index = None
        self._complete = None

    def end(self) -> NoninPacket | None:
        """The stream ended: its last packet, if all 25 of its frames came."""
        complete, self._complete = self._complete, None
        self.index = None
        return complete


@dataclass
class Nonin75Decoder:
    """Format #2 (``fmt=2``) or #7 (``fmt=7``): frames, packets and drop reports, in stream order."""

    fmt: int = 2
    framer: FixedFramer[NoninFrame] = field(init=False)
    packets: PacketAssembler = field(default_factory=PacketAssembler)

    def __post_init__(self) -> None:
        if self.fmt not in (2, 7):
            raise ValueError(f"Nonin format #{self.fmt} is not a 75 Hz format")
        parse = _parse2 if self.fmt == 2 else _parse7
        self.framer = FixedFramer(5, parse, reason="bad checksum or sync")

    @property
    def stats(self) -> FramerStats:
        return self.framer.stats

    def feed(self, data: bytes) -> list[NoninFrame | NoninPacket | Dropped]:
        return self._assemble(self.framer.feed(data))

    def finish(self) -> list[NoninFrame | NoninPacket | Dropped]:
        out = self._assemble(self.framer.finish())
        last = self.packets.end()
        return out if last is None else [*out, last]

    def _assemble(self, items: list[NoninFrame | Dropped]) -> list[NoninFrame | NoninPacket | Dropped]:
        out: list[NoninFrame | NoninPacket | Dropped] = []
        for it in items:
            out.append(it)
            if isinstance(it, Dropped):
                self.packets.lost_place()
            else:
                pkt = self.packets.frame(it)
                if pkt is not None:
                    out.append(pkt)
        return out


# --------------------------------------------------------------------------------------------
# Format #8
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Nonin8Frame:
    status: int
    status2: int
    pulse_rate: int | None
    spo2: int | None

    @property
    def flags(self) -> frozenset[DeviceFlag]:
        st, st2 = self.status, self.status2
        flags: set[DeviceFlag] = set()
        for bit, flag in (
            (0x40, DeviceFlag.SENSOR_OFF),
            (0x20, DeviceFlag.OUT_OF_TRACK),
            (0x10, DeviceFlag.LOW_PERFUSION),
            (0x08, DeviceFlag.MARGINAL_PERFUSION),
            (0x04, DeviceFlag.ARTIFACT),
        ):
            if st & bit:
                flags.add(flag)
        for bit, flag in (
            (0x08, DeviceFlag.SENSOR_FAULT),
            (0x02, DeviceFlag.BATTERY_CRITICAL),
            (0x01, DeviceFlag.BATTERY_LOW),
        ):
            if st2 & bit:
                flags.add(flag)
        return frozenset(flags)


def _parse8(buf: bytes | bytearray, i: int) -> Nonin8Frame | None:
    st, lsb, spo2, st2 = buf[i], buf[i + 1], buf[i + 2], buf[i + 3]
    if not st & 0x80 or (lsb | spo2 | st2) & 0x80 or st2 & 0xF0:
        return None
    hr = ((st & 0x03) << 7) | lsb
    if (spo2 > 100 and spo2 != SPO2_MISSING) or (hr > HR_MAX and hr != HR_MISSING):
        return None
    return Nonin8Frame(
        status=st,
        status2=st2,
        pulse_rate=None if hr == HR_MISSING else hr,
        spo2=None if spo2 == SPO2_MISSING else spo2,
    )


def nonin8_decoder() -> FixedFramer[Nonin8Frame]:
    """Bytes -> #8 frames and drop reports (no packets: every frame carries the numbers)."""
    return FixedFramer(4, _parse8, reason="no sync or implausible value")


# --------------------------------------------------------------------------------------------
# Frames -> readings
# --------------------------------------------------------------------------------------------


@dataclass
class Nonin75Translator:
    """Packets -> SpO2 and pulse-rate readings (3/s); frames -> pleth blocks of one packet (1/3 s)."""

    device_id: str
    pleth: WaveformAssembler = field(init=False)
    events: StateEvents = field(init=False)

    def __post_init__(self) -> None:
        self.pleth = WaveformAssembler(self.device_id, "pleth", FRAME_RATE_HZ, "1", FRAMES_PER_PACKET)
        self.events = StateEvents(self.device_id)

    def duration(self, item: Any) -> float:
        return 1.0 / FRAME_RATE_HZ if isinstance(item, NoninFrame) else 0.0

    def translate(self, items: Sequence[Any], t_end: float, clock: ClockQuality) -> list[Reading]:
        out: list[Reading] = []
        blocks: list[SampleBlock] = []
        times = back_dated_times(items, t_end, self.duration)
        for it, t in zip(items, times, strict=True):
            if isinstance(it, NoninFrame):
                self.events.update(status_flags(it.status), t, clock, out, battery=False)
                self.pleth.add(float(it.pleth), t, clock, blocks)
            elif isinstance(it, NoninPacket):
                out.extend(oximeter_vitals(self.device_id, it.pulse_rate, it.spo2, it.flags, t, clock))
            elif isinstance(it, Dropped):
                # Whole frames' worth of dropped bytes are samples lost; a partial frame still is one.
                self.pleth.gap(max(1, round(it.count / 5)), blocks)
            out.extend(blocks)
            blocks.clear()
        return out

    def flush(self) -> list[Reading]:
        blocks: list[SampleBlock] = []
        self.pleth.flush(blocks)
        return list(blocks)


@dataclass
class Nonin8Translator:
    device_id: str
    events: StateEvents = field(init=False)

    def __post_init__(self) -> None:
        self.events = StateEvents(self.device_id)

    def duration(self, item: Any) -> float:
        return 1.0 if isinstance(item, Nonin8Frame) else 0.0

    def translate(self, items: Sequence[Any], t_end: float, clock: ClockQuality) -> list[Reading]:
        out: list[Reading] = []
        times = back_dated_times(items, t_end, self.duration)
        for it, t in zip(items, times, strict=True):
            if isinstance(it, Nonin8Frame):
                flags = it.flags
                self.events.update(flags, t, clock, out, battery=True)
                out.extend(oximeter_vitals(self.device_id, it.pulse_rate, it.spo2, flags, t, clock))
        return out

    def flush(self) -> list[Reading]:
        return []
