"""``ecgstream``: the framed binary protocol of our ECG front-end (microcontroller + ADS1292/AD8232).

Full description in ``docs/ecg-frontend-protocol.md``.  One frame, all integers little-endian::

    0   2  sync 0xA5 0x5A
    2   1  version (high nibble, 1) | sample width in bytes (low nibble: 2 = int16, 3 = int24)
    3   1  flags: b0 lead off, b1 battery low, b2 front-end saturated; b3-b7 zero
    4   2  sequence counter, +1 per frame, wraps 65535 -> 0
    6   2  sample rate, Hz (1-4000)
    8   2  weight of one LSB, nanovolts (1-65535)
    10  1  channels C (1-4)
    11  1  samples per channel N (1-128)
    12  C*N*W samples, interleaved by instant (s0c0 s0c1 ... s1c0 ...), two's complement
    version 2 only:
    ..  1  P, pacing pulses the front-end detected in the frame (0-8)
    ..  P  their sample offsets in the frame, ascending, each < N
    ..  2  CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of bytes 2 .. end of samples (v2: of the pulses)

The sequence counter turns lost frames into a marked gap (``gap_before``) with the right number of
missing samples, never glued waveform.  Each block carries its frame's flags (``SampleBlock.flags``):
the ECG channel reads no rhythm in samples flagged lead off or saturated.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.serial.framing import Dropped, FramerStats
from drivers.serial.oximetry import StateEvents
from drivers.serial.waveform import back_dated_times
from gateway.readings import ClockQuality, DeviceFlag, Reading, SampleBlock

SYNC = b"\xa5\x5a"
HEADER_LEN = 12
CRC_LEN = 2
VERSION = 1
PACED_VERSION = 2  # version 1 and a list of the pacing pulses in the frame
VERSIONS = (VERSION, PACED_VERSION)
# A pacemaker pulses at most twice a beat (atrium, then ventricle); 8 in one frame (128 samples,
# 0.5 s at 250 Hz) is far more than any pacing, and a count beyond it marks a false sync.
MAX_PACE = 8
MAX_CHANNELS = 4
MAX_SAMPLES = 128
MAX_RATE_HZ = 4000
MAX_FRAME = HEADER_LEN + MAX_CHANNELS * MAX_SAMPLES * 3 + 1 + MAX_PACE + CRC_LEN

FLAG_LEAD_OFF = 0x01
FLAG_BATTERY_LOW = 0x02
FLAG_SATURATED = 0x04

_FLAG_BITS = (
    (FLAG_LEAD_OFF, DeviceFlag.LEAD_OFF),
    (FLAG_BATTERY_LOW, DeviceFlag.BATTERY_LOW),
    (FLAG_SATURATED, DeviceFlag.SATURATED),
)
_FLAG_MASK = FLAG_LEAD_OFF | FLAG_BATTERY_LOW | FLAG_SATURATED
# The flags of each possible flags byte, made once: every block of a frame carries its frame's.
_FLAG_SETS = tuple(frozenset(flag for bit, flag in _FLAG_BITS if bits & bit) for bits in range(_FLAG_MASK + 1))

# A jump of more frames than this is a device restart, not a run of lost frames.
MAX_SEQ_GAP = 1024

_HEADER = struct.Struct("<2sBBHHHBB")


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (check value 0x29B1 for b"123456789")."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True, slots=True)
class EcgFrame:
    seq: int
    flags: int
    sample_rate_hz: int
    lsb_nv: int
    samples: npt.NDArray[np.int32]  # shape (N, C), raw counts
    pace: tuple[int, ...] = ()  # sample offsets of the pacing pulses the front-end detected (version 2)

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])


def encode_frame(
    seq: int,
    samples: npt.NDArray[np.integer[Any]],
    sample_rate_hz: int,
    lsb_nv: int,
    width: int = 2,
    flags: int = 0,
    pace: Sequence[int] | None = None,
) -> bytes:
    """One frame for ``samples`` of shape (N, C) or (N,): what the front-end firmware sends.
    ``pace`` (the offsets of the pacing pulses in it, possibly none) makes it a version 2 frame."""
    arr = np.asarray(samples, dtype=np.int64)
    if arr.ndim == 1:
        arr = arr[:, None]
    n, c = arr.shape
    if width not in (2, 3) or not 1 <= c <= MAX_CHANNELS or not 1 <= n <= MAX_SAMPLES:
        raise ValueError("width must be 2 or 3, 1-4 channels, 1-128 samples")
    lim = 1 << (8 * width - 1)
    if arr.min() < -lim or arr.max() >= lim:
        raise ValueError(f"sample out of int{8 * width} range")
    if pace is not None and not valid_pace(tuple(pace), n):
        raise ValueError(f"pace: at most {MAX_PACE} ascending offsets under {n}, got {list(pace)}")
    flat = arr.reshape(-1)
    if width == 2:
        payload = flat.astype("<i2").tobytes()
    else:
        u = (flat & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3]
        payload = u.tobytes()
    version = VERSION if pace is None else PACED_VERSION
    body = _HEADER.pack(SYNC, (version << 4) | width, flags, seq & 0xFFFF, sample_rate_hz, lsb_nv, c, n)[2:] + payload
    if pace is not None:
        body += bytes([len(pace), *pace])
    return SYNC + body + struct.pack("<H", crc16(body))


def valid_pace(offsets: tuple[int, ...], n: int) -> bool:
    """At most ``MAX_PACE`` offsets, ascending, each one a sample of the frame's ``n``."""
    return len(offsets) <= MAX_PACE and all(a < b for a, b in pairwise((-1, *offsets, n)))


def _header(buf: bytes | bytearray, i: int) -> tuple[int, int, int, int, int, int, int, int] | None:
    """(version, width, flags, seq, rate, lsb, channels, n) of a plausible header at ``i``, else None."""
    _, ver, flags, seq, rate, lsb, c, n = _HEADER.unpack_from(buf, i)
    width = ver & 0x0F
    if (
        ver >> 4 not in VERSIONS
        or width not in (2, 3)
        or flags & 0xF8
        or not 1 <= rate <= MAX_RATE_HZ
        or lsb == 0
        or not 1 <= c <= MAX_CHANNELS
        or not 1 <= n <= MAX_SAMPLES
    ):
        return None
    return ver >> 4, width, flags, seq, rate, lsb, c, n


def _samples(payload: bytes, width: int, n: int, c: int) -> npt.NDArray[np.int32]:
    if width == 2:
        flat = np.frombuffer(payload, dtype="<i2").astype(np.int32)
    else:
        b = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        flat = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        flat = np.where(flat >= 1 << 23, flat - (1 << 24), flat).astype(np.int32)
    return flat.reshape(n, c)


@dataclass
class EcgDecoder:
    stats: FramerStats = field(default_factory=FramerStats)
    _buf: bytearray = field(default_factory=bytearray)
    _offset: int = 0
    _drop_start: int = 0
    _drop_count: int = 0
    _drop_reason: str = ""

    def _drop(self, pos: int, n: int, reason: str) -> None:
        if self._drop_count == 0:
            self._drop_start = self._offset + pos
            self._drop_reason = reason
        self._drop_count += n
        self.stats.dropped_bytes += n

    def _flush_drop(self, out: list[EcgFrame | Dropped]) -> None:
        if self._drop_count:
            out.append(Dropped(self._drop_start, self._drop_count, self._drop_reason))
            self.stats.drops += 1
            self._drop_count = 0

    def feed(self, data: bytes) -> list[EcgFrame | Dropped]:
        self.stats.bytes_in += len(data)
        self._buf += data
        return self._run(final=False)

    def finish(self) -> list[EcgFrame | Dropped]:
        out = self._run(final=True)
        if self._buf:
            self._drop(0, len(self._buf), "truncated frame")
            self._offset += len(self._buf)
            self._buf.clear()
        self._flush_drop(out)
        return out

    def _run(self, final: bool) -> list[EcgFrame | Dropped]:
        out: list[EcgFrame | Dropped] = []
        buf = self._buf
        i = 0
        while True:
            j = buf.find(SYNC, i)
            if j < 0:
                # Keep a trailing 0xA5: it may be the first half of the next sync word.  Not when
                # it ended a frame just read (its CRC's last byte): it would count as dropped next.
                keep = 1 if buf[-1:] == SYNC[:1] and not final and i < len(buf) else 0
                if len(buf) - keep > i:
                    self._drop(i, len(buf) - keep - i, "no sync")
                i = len(buf) - keep
                break
            if j > i:
                self._drop(i, j - i, "no sync")
                i = j
            if len(buf) - i < HEADER_LEN:
                if final:
                    self._drop(i, 1, "truncated frame")
                    i += 1
                    continue
                break
            hdr = _header(buf, i)
            if hdr is None:
                self._drop(i, 1, "bad header")
                i += 1
                continue
            version, width, flags, seq, rate, lsb, c, n = hdr
            samples_end = end = i + HEADER_LEN + c * n * width
            if version == PACED_VERSION:
                count = buf[end] if len(buf) > end else 0  # not here yet: the length check waits for it
                if count > MAX_PACE:
                    self._drop(i, 1, "bad header")
                    i += 1
                    continue
                end += 1 + count
            if len(buf) < end + CRC_LEN:
                if final:
                    self._drop(i, 1, "truncated frame")
                    i += 1
                    continue
                break
            (crc,) = struct.unpack_from("<H", buf, end)
            if crc16(memoryview(buf)[i + 2 : end]) != crc:
                self._drop(i, 1, "bad CRC")
                i += 1
                continue
            pace = tuple(buf[samples_end + 1 : end])
            if not valid_pace(pace, n):
                # The CRC holds: the firmware itself sent it.  Its samples cannot be placed
                # against the pulses, so the frame is dropped (a gap), and the reason says why.
                self._flush_drop(out)
                self._drop(i, end + CRC_LEN - i, "bad pace list")
                self._flush_drop(out)
                i = end + CRC_LEN
                continue
            self._flush_drop(out)
            samples = _samples(bytes(buf[i + HEADER_LEN : samples_end]), width, n, c)
            out.append(EcgFrame(seq, flags, rate, lsb, samples, pace))
            self.stats.frames += 1
            i = end + CRC_LEN
        if i:
            self._offset += i
            del buf[:i]
        return out


@dataclass
class EcgTranslator:
    """One ``SampleBlock`` per frame and channel (channel 0 is "ecg", others "ecg2", "ecg3", ...), in uV."""

    device_id: str
    events: StateEvents = field(init=False)
    next_index: int = 0
    _expected_seq: int | None = None
    _next_time: float | None = None
    _rate: int = 0

    def __post_init__(self) -> None:
        self.events = StateEvents(self.device_id)

    def duration(self, item: Any) -> float:
        return item.n_samples / item.sample_rate_hz if isinstance(item, EcgFrame) else 0.0

    def _lost_samples(self, f: EcgFrame, t_first: float) -> tuple[bool, int]:
        """(gap?, samples lost) before frame ``f``, from the sequence counter or, after a restart, the clock."""
        if self._expected_seq is None:
            return False, 0
        if f.sample_rate_hz != self._rate:
            return True, 0
        missing = (f.seq - self._expected_seq) & 0xFFFF
        if missing == 0:
            return False, 0
        if missing < MAX_SEQ_GAP:
            return True, missing * f.n_samples
        assert self._next_time is not None
        return True, max(0, round((t_first - self._next_time) * f.sample_rate_hz))

    def translate(self, items: Sequence[Any], t_end: float, clock: ClockQuality) -> list[Reading]:
        out: list[Reading] = []
        times = back_dated_times(items, t_end, self.duration)
        for it, t in zip(items, times, strict=True):
            if not isinstance(it, EcgFrame):
                continue
            fs = it.sample_rate_hz
            n = it.n_samples
            t_first = t - (n - 1) / fs
            gap, lost = self._lost_samples(it, t_first)
            self.next_index += lost
            # Keep sample times on a smooth grid while the stream is continuous and the host clock
            # agrees within half a second; re-anchor on the host clock otherwise.
            if not gap and self._next_time is not None and abs(self._next_time - t_first) < 0.5:
                t_first = self._next_time
            flags = _FLAG_SETS[it.flags & _FLAG_MASK]
            self.events.update(flags, t_first, clock, out, battery=True)
            scale = it.lsb_nv / 1000.0
            for ch in range(it.samples.shape[1]):
                out.append(
                    SampleBlock(
                        device_id=self.device_id,
                        channel="ecg" if ch == 0 else f"ecg{ch + 1}",
                        sample_rate_hz=float(fs),
                        first_sample_time=t_first,
                        samples=it.samples[:, ch].astype(np.float64) * scale,
                        unit="uV",
                        first_index=self.next_index,
                        gap_before=gap,
                        clock=clock,
                        pace=it.pace,
                        flags=flags,
                    )
                )
            self.next_index += n
            self._expected_seq = (it.seq + 1) & 0xFFFF
            self._next_time = t_first + n / fs
            self._rate = fs
        return out

    def flush(self) -> list[Reading]:
        return []
