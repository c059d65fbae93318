"""Masimo Radical-7 serial ASCII output: one CRLF-terminated line per second, parsed by key.

``12/01/05 11:56:29 SN=0123456789 SPO2=098% BPM=240 PI=20.00% ... ALARM=0000 EXC=000820``

Dashes mean "no value".  ALARM and EXC are hex bit fields.  Keys we do not know (newer firmware
adds SPHB, SPOC, RESVD, EXC1, ...) are ignored.  There is no checksum, so a line is rejected as a
whole when it holds a non-printable byte, does not start with a date and time, or a known key has a
value that does not parse or is out of range: a line with one corrupted number is not half-trusted.

Every field has a fixed width, and with no checksum that width is what shows a lost byte: BPM=150
that loses its "1" would read 50 /min, EXC=000808 that loses its last digit would drop the
pulse-search bit.  SPO2 and BPM are three characters and PI five (``dd.dd``), on the Radical-5 and
-7 alike (MD PnP's example lines, ``poxrad_discrete.h``).  ALARM and EXC are four and six hex
digits on a Radical-7 but two and three on a Radical-5, so the decoder takes their widths from the
device's first line and rejects a line that differs, until three lines in a row agree on new
widths (another device on the port).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.serial.framing import Dropped, FramerStats
from drivers.serial.oximetry import StateEvents
from drivers.serial.waveform import back_dated_times
from gateway.readings import VITAL_UNITS, ClockQuality, DeviceFlag, Reading, Vital, VitalReading

MAX_LINE = 512  # real lines are ~150 bytes; a longer run without LF is garbage
LINE_PERIOD_S = 1.0

_DATE = re.compile(rb"^\d\d/\d\d/\d\d$")
_LINE_START = re.compile(rb"\d\d/\d\d/\d\d \d\d:\d\d:\d\d ")
_TIME = re.compile(rb"^\d\d:\d\d:\d\d$")
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,8}$")
_THREE_DIGITS = re.compile(rb"^\d{3}$")
_TWO_DECIMALS = re.compile(rb"^\d\d\.\d\d$")

# key -> (vital, unit suffix the device appends, the value's fixed form, valid range)
_VITAL_KEYS: dict[bytes, tuple[Vital, bytes, re.Pattern[bytes], float, float]] = {
    b"SPO2": (Vital.SPO2, b"%", _THREE_DIGITS, 0.0, 100.0),
    b"BPM": (Vital.PULSE_RATE, b"", _THREE_DIGITS, 0.0, 300.0),
    b"PI": (Vital.PERFUSION_INDEX, b"%", _TWO_DECIMALS, 0.0, 20.0),
}
#: Lines in a row that must agree on new ALARM/EXC widths before the decoder takes them.
NEW_WIDTHS_AFTER = 3

ALARM_BITS = {0x1: "spo2_high", 0x2: "spo2_low", 0x4: "pr_high", 0x8: "pr_low", 0x10: "active", 0x20: "silenced"}
# Exception bits (MD PnP's table of the Radical's codes, ``poxrad_discrete.h``).  0x800 (SET
# mode), 0x200 and 0x800000 (reserved) and the SpCO/SpMET confidence bits say nothing of SpO2.
EXC_FLAGS = {
    0x1: DeviceFlag.SENSOR_OFF,  # no sensor
    0x2: DeviceFlag.SENSOR_FAULT,  # defective sensor
    0x4: DeviceFlag.LOW_PERFUSION,
    0x8: DeviceFlag.SEARCHING,  # pulse search
    0x10: DeviceFlag.ARTIFACT,  # interference
    0x20: DeviceFlag.SENSOR_OFF,
    0x40: DeviceFlag.ARTIFACT,  # ambient light
    0x80: DeviceFlag.SENSOR_FAULT,  # unrecognised sensor
    0x100: DeviceFlag.SENSOR_FAULT,  # incompatible sensor
    0x400: DeviceFlag.LOW_SIGNAL_QUALITY,
    0x1000: DeviceFlag.SENSOR_OFF,  # no cable connected
    0x2000: DeviceFlag.SENSOR_FAULT,  # cable life expired
    0x4000: DeviceFlag.SENSOR_FAULT,  # incompatible cable
    0x8000: DeviceFlag.SENSOR_FAULT,  # unrecognised cable
    0x10000: DeviceFlag.SENSOR_FAULT,  # defective cable
    0x20000: DeviceFlag.SEARCHING,  # sensor calibrating: no settled value yet
    0x40000: DeviceFlag.SENSOR_FAULT,  # sensor life expired
    0x80000: DeviceFlag.SENSOR_FAULT,  # emitter temperature out of range
    0x100000: DeviceFlag.SENSOR_FAULT,  # sensor current limit exceeded
}


class _BadLine(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class MasimoLine:
    device_time: str  # "MM/DD/YY HH:MM:SS" as sent; the device's zone is unknown
    values: dict[Vital, float | None]
    alarm: int
    exc: int
    serial: str | None = None
    widths: tuple[int, int] = (0, 0)  # characters of ALARM and EXC as sent (0: absent)

    @property
    def flags(self) -> frozenset[DeviceFlag]:
        flags = {flag for bit, flag in EXC_FLAGS.items() if self.exc & bit}
        if self.alarm & 0x10:
            flags.add(DeviceFlag.DEVICE_ALARM)
        return frozenset(flags)

    @property
    def alarms(self) -> list[str]:
        return [name for bit, name in ALARM_BITS.items() if self.alarm & bit]


def _value(raw: bytes, suffix: bytes, form: re.Pattern[bytes], lo: float, hi: float) -> float | None:
    if suffix and raw.endswith(suffix):
        raw = raw[: -len(suffix)]
    if raw and set(raw) <= {ord("-"), ord(".")}:
        return None
    if not form.match(raw):
        raise _BadLine(f"value {raw!r} is not of the device's fixed width")
    v = float(raw)
    if not lo <= v <= hi:
        raise _BadLine(f"value {v} out of range")
    return v


def parse_line(line: bytes) -> MasimoLine:
    """Parse one line (without CR/LF); raise ``ValueError`` if it cannot be trusted."""
    if any(b < 0x20 or b > 0x7E for b in line):
        raise _BadLine("non-printable byte")
    tokens = line.split()
    if len(tokens) < 3 or not _DATE.match(tokens[0]) or not _TIME.match(tokens[1]):
        raise _BadLine("no leading date and time")
    values: dict[Vital, float | None] = {}
    alarm = exc = 0
    widths = [0, 0]
    serial: str | None = None
    seen = False
    for tok in tokens[2:]:
        key, eq, raw = tok.partition(b"=")
        if not eq or not key:
            raise _BadLine(f"token {tok!r} is not KEY=VALUE")
        if key in _VITAL_KEYS:
            vital, suffix, form, lo, hi = _VITAL_KEYS[key]
            values[vital] = _value(raw, suffix, form, lo, hi)
            seen = True
        elif key in (b"ALARM", b"EXC"):
            if not _HEX.match(raw):
                raise _BadLine(f"{key.decode()} is not hex")
            if key == b"ALARM":
                alarm, widths[0] = int(raw, 16), len(raw)
            else:
                exc, widths[1] = int(raw, 16), len(raw)
            seen = True
        elif key == b"SN":
            serial = raw.decode()
    if not seen:
        raise _BadLine("no known key")
    return MasimoLine((tokens[0] + b" " + tokens[1]).decode(), values, alarm, exc, serial, (widths[0], widths[1]))


@dataclass
class MasimoDecoder:
    stats: FramerStats = field(default_factory=FramerStats)
    _buf: bytearray = field(default_factory=bytearray)
    _offset: int = 0
    _widths: tuple[int, int] | None = None  # the device's ALARM and EXC widths, from its lines
    _new_widths: tuple[int, int] | None = None
    _new_seen: int = 0

    def _reject(self, n: int, reason: str, out: list[MasimoLine | Dropped]) -> None:
        out.append(Dropped(self._offset, n, reason))
        self.stats.dropped_bytes += n
        self.stats.drops += 1

    def feed(self, data: bytes) -> list[MasimoLine | Dropped]:
        self.stats.bytes_in += len(data)
        self._buf += data
        out: list[MasimoLine | Dropped] = []
        buf = self._buf
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                # Keep the last MAX_LINE bytes: a real line may have begun inside them.
                excess = len(buf) - start - MAX_LINE
                if excess > 0:
                    self._reject(excess, "line too long", out)
                    self._offset += excess
                    start += excess
                break
            raw = bytes(buf[start:nl]).rstrip(b"\r")
            n = nl + 1 - start
            if raw.strip():
                self._line(raw, n, out)
            self._offset += n
            start = nl + 1
        del buf[:start]
        return out

    def _line(self, raw: bytes, n: int, out: list[MasimoLine | Dropped]) -> None:
        try:
            line = parse_line(raw)
        except ValueError as e:
            # Garbage glued in front of a good line (no newline between): start again at the
            # last date-and-time in the line, so the line itself is not lost.
            starts = [m.start() for m in _LINE_START.finditer(raw) if m.start() > 0]
            if starts:
                try:
                    line = parse_line(raw[starts[-1] :])
                except ValueError:
                    pass
                else:
                    self._reject(starts[-1], "garbage before line", out)
                    self._accept(line, n - starts[-1], out)
                    return
            self._reject(n, f"bad line: {e}", out)
        else:
            self._accept(line, n, out)

    def _accept(self, line: MasimoLine, n: int, out: list[MasimoLine | Dropped]) -> None:
        if self._widths is not None and line.widths != self._widths:
            if line.widths == self._new_widths:
                self._new_seen += 1
            else:
                self._new_widths, self._new_seen = line.widths, 1
            if self._new_seen < NEW_WIDTHS_AFTER:
                alarm, exc = self._widths
                self._reject(
                    n, f"bad line: ALARM/EXC of {line.widths[0]}/{line.widths[1]} characters, not {alarm}/{exc}", out
                )
                return
        self._widths, self._new_widths, self._new_seen = line.widths, None, 0
        out.append(line)
        self.stats.frames += 1

    def finish(self) -> list[MasimoLine | Dropped]:
        """A last line without its newline is still a line."""
        out: list[MasimoLine | Dropped] = []
        raw, n = bytes(self._buf).rstrip(b"\r"), len(self._buf)
        if raw.strip():
            self._line(raw, n, out)
        elif n:
            self._reject(n, "trailing bytes", out)
        self._offset += n
        self._buf.clear()
        return out


@dataclass
class MasimoTranslator:
    device_id: str
    events: StateEvents = field(init=False)

    def __post_init__(self) -> None:
        self.events = StateEvents(self.device_id)

    def duration(self, item: Any) -> float:
        return LINE_PERIOD_S if isinstance(item, MasimoLine) else 0.0

    def translate(self, items: Sequence[Any], t_end: float, clock: ClockQuality) -> list[Reading]:
        out: list[Reading] = []
        times = back_dated_times(items, t_end, self.duration)
        for it, t in zip(items, times, strict=True):
            if not isinstance(it, MasimoLine):
                continue
            flags = it.flags
            self.events.update(flags, t, clock, out, battery=False)
            for vital, value in it.values.items():
                out.append(VitalReading(self.device_id, vital, value, VITAL_UNITS[vital], t, clock, flags))
        return out

    def flush(self) -> list[Reading]:
        return []
