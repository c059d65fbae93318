"""Polar H10 raw ECG over the Polar Measurement Data (PMD) service.

The strap streams 130 Hz ECG in frames of ~70 samples.  Each frame carries the sensor-clock
time of its **last** sample (ns since 2000-01-01T00:00Z) and 3-byte signed samples in µV.
There is no frame counter, so a lost frame shows up only as a jump in the sensor timestamps:
``EcgTimeline`` turns that into ``gap_before`` on the next block.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from drivers.ble.wire import DecodeError, Reader
from gateway.readings import ClockQuality, SampleBlock

SERVICE = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
CONTROL_POINT = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
DATA = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"

ECG_SAMPLE_RATE_HZ = 130.0
POLAR_EPOCH_UNIX_S = 946_684_800  # 2000-01-01T00:00:00Z
MEASUREMENT_ECG = 0
FRAME_TYPE_RAW = 0  # uncompressed, 3 bytes per sample

START_ECG = bytes([0x02, 0x00, 0x00, 0x01, 0x82, 0x00, 0x01, 0x01, 0x0E, 0x00])  # 130 Hz, 14 bit
STOP_ECG = bytes([0x03, 0x00])

_CONTROL_RESPONSE = 0xF0


class PmdError(enum.IntEnum):
    SUCCESS = 0
    INVALID_OP_CODE = 1
    INVALID_MEASUREMENT_TYPE = 2
    NOT_SUPPORTED = 3
    INVALID_LENGTH = 4
    INVALID_PARAMETER = 5
    ALREADY_IN_STATE = 6
    INVALID_RESOLUTION = 7
    INVALID_SAMPLE_RATE = 8
    INVALID_RANGE = 9
    INVALID_MTU = 10
    INVALID_NUMBER_OF_CHANNELS = 11
    INVALID_STATE = 12
    DEVICE_IN_CHARGER = 13


@dataclass(frozen=True, slots=True)
class EcgFrame:
    sensor_time_ns: int  # of the last sample, since 2000-01-01
    samples_uv: tuple[int, ...]

    @property
    def last_sample_unix(self) -> float:
        return POLAR_EPOCH_UNIX_S + self.sensor_time_ns / 1e9


@dataclass(frozen=True, slots=True)
class ControlResponse:
    opcode: int
    measurement_type: int
    error: PmdError

    @property
    def ok(self) -> bool:
        # "already in state" after a start we sent means the stream is running: as good as success.
        return self.error in (PmdError.SUCCESS, PmdError.ALREADY_IN_STATE)


def decode_ecg(data: bytes) -> EcgFrame:
    r = Reader(data)
    mtype = r.u8("measurement type")
    if mtype != MEASUREMENT_ECG:
        raise DecodeError(f"not an ECG frame (measurement type {mtype})")
    ts = r.u64("timestamp")
    ftype = r.u8("frame type")
    if ftype != FRAME_TYPE_RAW:
        raise DecodeError(f"unsupported ECG frame type 0x{ftype:02X} (only raw 3-byte samples)")
    body = r.rest()
    if not body or len(body) % 3:
        raise DecodeError(f"ECG samples need a non-zero multiple of 3 bytes, got {len(body)}")
    samples = tuple(int.from_bytes(body[i : i + 3], "little", signed=True) for i in range(0, len(body), 3))
    return EcgFrame(ts, samples)


def decode_control(data: bytes) -> ControlResponse:
    r = Reader(data)
    head = r.u8("response code")
    if head != _CONTROL_RESPONSE:
        raise DecodeError(f"not a PMD control response (0x{head:02X})")
    op = r.u8("opcode")
    mtype = r.u8("measurement type")
    code = r.u8("error code")
    try:
        err = PmdError(code)
    except ValueError as e:
        raise DecodeError(f"unknown PMD error code {code}") from e
    return ControlResponse(op, mtype, err)


class EcgTimeline:
    """Maps sensor-clock frames to UTC sample blocks, numbering samples and marking gaps.

    The strap's clock is precise but its epoch is whatever it was last set to; the first frame
    anchors it to host time (``offset_s``, recorded by the driver), later frames keep the sensor's
    own spacing so the waveform timing carries no Bluetooth jitter.
    """

    # A frame is "late" when its first sample comes more than this many periods after the previous
    # frame's last one; below that it is jitter or the strap's few-ppm rate error.
    GAP_TOLERANCE_PERIODS = 1.5

    def __init__(self, device_id: str, sample_rate_hz: float = ECG_SAMPLE_RATE_HZ) -> None:
        self.device_id = device_id
        self.fs = sample_rate_hz
        self.offset_s: float | None = None
        self._next_index = 0
        self._prev_last_ns: int | None = None
        self.gaps = 0

    def block(self, frame: EcgFrame, received_at: float, clock: ClockQuality) -> SampleBlock:
        n = len(frame.samples_uv)
        period_ns = 1e9 / self.fs
        first_ns = frame.sensor_time_ns - (n - 1) * period_ns
        if self.offset_s is None:
            self.offset_s = received_at - frame.last_sample_unix
        gap = False
        if self._prev_last_ns is not None:
            late_periods = (first_ns - self._prev_last_ns) / period_ns - 1.0
            if late_periods > self.GAP_TOLERANCE_PERIODS or late_periods < -self.GAP_TOLERANCE_PERIODS:
                gap = True
                self.gaps += 1
                # Lost samples advance the index; a clock jump backwards cannot rewind it.
                self._next_index += max(0, round(late_periods))
        self._prev_last_ns = frame.sensor_time_ns
        first_index = self._next_index
        self._next_index += n
        return SampleBlock(
            device_id=self.device_id,
            channel="ecg",
            sample_rate_hz=self.fs,
            first_sample_time=POLAR_EPOCH_UNIX_S + first_ns / 1e9 + self.offset_s,
            samples=np.asarray(frame.samples_uv, dtype=np.float64),
            unit="uV",
            first_index=first_index,
            gap_before=gap,
            clock=clock,
        )
