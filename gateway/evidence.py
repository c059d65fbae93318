"""Alarm evidence strips: the waveform around an alarm's raise, for a person to look at.

Per patient, the recent samples of every waveform channel (ECG leads, pleth) are kept for
``max_pre_s`` plus a little.  When a physiologic alarm is raised for a device that streams a matching
waveform (ECG for heart-rate and rhythm alarms, pleth for SpO2/pulse), or the "no valid ECG"
technical alarm (so that a technician sees whether it is a loose electrode, motion or mains
hum), a capture is armed; once
``post_s`` seconds after the raise have arrived (or the stream breaks) the strip is cut, encoded
(``evidence_codec``) and handed back to be sent as an ``evidence`` record with the alarm's id.
A strip starts ``pre_s`` before the raise, or ``ONSET_LEAD_S`` before the condition's onset when
that is earlier (up to ``max_pre_s``): VF is raised a median 7 s into an episode (vfdb,
``bench/ecg_vf.py``), and a strip of the 8 s before its raise often began after the change from
the rhythm before, which is what a person looking at it wants to see.

Budgets (``alarms.evidence`` in the config): a strip longer than ``max_strip_bytes`` encoded loses
its oldest seconds until it fits; a strip that would take the patient beyond
``max_bytes_per_hour`` (a sliding hour) is not made, and counted in ``skipped``.  A technical
alarm's strip is made only while the hour's strips stay within ``technical_share`` of it: noise
compresses badly, and an hour of it must not leave no room for the strip of a VF alarm.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from gateway import evidence_codec
from gateway.config.processing import EvidenceSection
from gateway.readings import SampleBlock, Vital
from gateway.signal.ecg_filters import to_millivolts

# Seconds of the rhythm before the condition's onset that a strip keeps (when the onset is known).
ONSET_LEAD_S = 2.0

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

ECG_VITALS = frozenset({Vital.HEART_RATE, Vital.RR_INTERVAL, None})  # None: rhythm alarms, "no valid ECG"
PLETH_VITALS = frozenset({Vital.SPO2, Vital.PULSE_RATE, Vital.PERFUSION_INDEX})
MV_RESOLUTION = 0.001  # ECG strips in whole microvolts


def channel_kind(channel: str) -> str:
    c = channel.lower()
    return "ecg" if c.startswith("ecg") else "pleth" if c.startswith(("pleth", "ppg")) else "other"


@dataclass(frozen=True, slots=True)
class Strip:
    alarm_id: str
    condition: str
    device: str
    channel: str
    fs: float
    unit: str
    resolution: float
    start_time: float
    n_samples: int
    raise_index: int
    onset_index: int | None
    beats: list[int]
    pace: list[int]
    sample_format: evidence_codec.SampleFormat
    data: str


@dataclass(slots=True)
class _Buffer:
    fs: float
    unit: str
    resolution: float
    capacity: int
    start_index: int = 0  # index of the first kept sample
    start_time: float = 0.0  # its time
    samples: deque[FloatArray] = field(default_factory=deque)
    kept: int = 0
    beats: deque[int] = field(default_factory=deque)
    pace: deque[int] = field(default_factory=deque)  # pacing pulses the device marked

    @property
    def end_index(self) -> int:
        return self.start_index + self.kept

    def time_of(self, index: int) -> float:
        return self.start_time + (index - self.start_index) / self.fs

    def index_of(self, t: float) -> int:
        return self.start_index + round((t - self.start_time) * self.fs)

    def append(self, values: FloatArray, beats: list[int], pace: list[int]) -> None:
        self.samples.append(values)
        self.kept += len(values)
        self.beats.extend(beats)
        self.pace.extend(pace)
        while self.samples and self.kept - len(self.samples[0]) >= self.capacity:
            old = self.samples.popleft()
            self.kept -= len(old)
            self.start_time += len(old) / self.fs
            self.start_index += len(old)
        while self.beats and self.beats[0] < self.start_index:
            self.beats.popleft()
        while self.pace and self.pace[0] < self.start_index:
            self.pace.popleft()


@dataclass(frozen=True, slots=True)
class _Capture:
    alarm_id: str
    condition: str
    device: str
    kind: str  # "ecg" or "pleth"
    raise_time: float
    onset_time: float | None
    technical: bool = False


class EvidenceRecorder:
    """Waveform buffers, armed captures and the byte budget of one patient."""

    def __init__(self, settings: EvidenceSection) -> None:
        self.settings = settings
        self._buffers: dict[tuple[str, str], _Buffer] = {}
        self._pending: list[_Capture] = []
        self._armed: set[str] = set()
        self._spent: deque[tuple[float, int]] = deque()  # (raise time, bytes) of strips made
        self.skipped = 0

    def arm(
        self,
        alarm_id: str,
        condition: str,
        device: str,
        vital: Vital | None,
        t: float,
        onset: float | None = None,
        *,
        technical: bool = False,
    ) -> None:
        """An alarm was raised: capture its strip if the device streams a matching waveform."""
        if not self.settings.enabled or alarm_id in self._armed:
            return
        if technical and self.settings.technical_share <= 0:
            return
        kind = "ecg" if vital in ECG_VITALS else "pleth" if vital in PLETH_VITALS else None
        if kind is None or not any(d == device and channel_kind(c) == kind for d, c in self._buffers):
            return
        self._armed.add(alarm_id)
        self._pending.append(_Capture(alarm_id, condition, device, kind, t, onset, technical))

    def capturing(self, device: str) -> bool:
        """Whether an ECG strip of ``device`` is waiting for its samples (and beat marks)."""
        return any(c.device == device and c.kind == "ecg" for c in self._pending)

    def add_block(self, block: SampleBlock, beats: list[int] | None = None) -> list[Strip]:
        """Keep a block's samples; returns the strips it completes."""
        kind = channel_kind(block.channel)
        if kind == "other" or len(block.samples) == 0:
            return []
        key = (block.device_id, block.channel)
        values, unit, resolution = _scaled(block)
        buf = self._buffers.get(key)
        out: list[Strip] = []
        contiguous = buf is not None and buf.fs == block.sample_rate_hz and buf.end_index == block.first_index
        if buf is not None and (not contiguous or block.gap_before):
            out += self._complete(key, buf, force=True)  # a strip never spans a gap
            buf = None
        if buf is None:
            s = self.settings
            buf = _Buffer(
                fs=block.sample_rate_hz,
                unit=unit,
                resolution=resolution,
                capacity=round((s.max_pre_s + s.post_s + 1.0) * block.sample_rate_hz),
                start_index=block.first_index,
                start_time=block.first_sample_time,
            )
            self._buffers[key] = buf
        # Beats are decided late: they may precede the block.  Pacing pulses come with it.
        buf.append(values, list(beats or ()), [block.first_index + p for p in block.pace])
        return out + self._complete(key, buf, force=False)

    def _complete(self, key: tuple[str, str], buf: _Buffer, force: bool) -> list[Strip]:
        device, channel = key
        kind = channel_kind(channel)
        out: list[Strip] = []
        waiting: list[_Capture] = []
        last_time = buf.time_of(buf.end_index)
        for c in self._pending:
            if c.device != device or c.kind != kind:
                waiting.append(c)
                continue
            if last_time < c.raise_time + self.settings.post_s and not force:
                waiting.append(c)
                continue
            if buf.time_of(buf.start_index) > c.raise_time or last_time < c.raise_time:
                self._armed.discard(c.alarm_id)  # the raise is not in this stream's samples
                continue
            strip = self._cut(c, channel, buf)
            self._armed.discard(c.alarm_id)
            if strip is not None:
                out.append(strip)
        self._pending = waiting
        return out

    def _cut(self, c: _Capture, channel: str, buf: _Buffer) -> Strip | None:
        s = self.settings
        everything = np.concatenate(list(buf.samples))
        r = buf.index_of(c.raise_time) - buf.start_index
        stop = min(len(everything), r + round(s.post_s * buf.fs))
        pre = s.pre_s
        if c.onset_time is not None:
            pre = min(max(pre, c.raise_time - c.onset_time + ONSET_LEAD_S), s.max_pre_s)
        while True:
            start = max(0, r - round(pre * buf.fs))
            ints = np.round(everything[start:stop] / buf.resolution).astype(np.int64)
            fmt, data = evidence_codec.encode(ints)
            if len(data) <= s.max_strip_bytes or pre <= 1.0:
                break
            pre = max(1.0, pre * 0.75)  # too big: drop the oldest seconds first
        if len(data) > s.max_strip_bytes:
            self.skipped += 1
            return None
        while self._spent and self._spent[0][0] <= c.raise_time - 3600.0:
            self._spent.popleft()
        limit = s.max_bytes_per_hour * (s.technical_share if c.technical else 1.0)
        if sum(b for _, b in self._spent) + len(data) > limit:
            self.skipped += 1
            return None
        self._spent.append((c.raise_time, len(data)))
        first = buf.start_index + start
        onset = None if c.onset_time is None else max(0, buf.index_of(c.onset_time) - first)
        return Strip(
            alarm_id=c.alarm_id,
            condition=c.condition,
            device=c.device,
            channel=channel,
            fs=buf.fs,
            unit=buf.unit,
            resolution=buf.resolution,
            start_time=buf.time_of(first),
            n_samples=len(ints),
            raise_index=r - start,
            onset_index=onset,
            beats=[b - first for b in buf.beats if first <= b < first + len(ints)],
            pace=[p - first for p in buf.pace if first <= p < first + len(ints)],
            sample_format=fmt,
            data=data,
        )


def _scaled(block: SampleBlock) -> tuple[FloatArray, str, float]:
    """Samples in the strip's unit, with the resolution they are kept at."""
    raw = np.asarray(block.samples, dtype=np.float64)
    try:
        return np.nan_to_num(to_millivolts(raw, block.unit)), "mV", MV_RESOLUTION
    except ValueError:
        pass
    integral = bool(np.all(np.isfinite(raw))) and bool(np.all(raw == np.round(raw)))
    return np.nan_to_num(raw), block.unit, 1.0 if integral else 0.001
