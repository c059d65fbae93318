"""Turning decoded frames into readings: per-item reception times and waveform sample blocks.

Pure helpers shared by the protocol translators; times are passed in, never read from a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from gateway.readings import ClockQuality, SampleBlock

T = TypeVar("T")


def back_dated_times(items: Sequence[T], t_end: float, duration: Callable[[T], float]) -> list[float]:
    """Time of each item when ``items`` all arrived in one read that completed at ``t_end``.

    The last item is stamped ``t_end``; each earlier one is moved back by the wire time of the
    items after it (its frame period), since a read that returns several frames got them late.
    """
    times = [0.0] * len(items)
    t = t_end
    for k in range(len(items) - 1, -1, -1):
        times[k] = t
        t -= duration(items[k])
    return times


@dataclass
class WaveformAssembler:
    """Collects samples of one channel into blocks of ``block_len``; a gap flushes and marks the next block."""

    device_id: str
    channel: str
    sample_rate_hz: float
    unit: str
    block_len: int
    next_index: int = 0
    _samples: list[float] = field(default_factory=list)
    _first_time: float = 0.0
    _first_index: int = 0
    _gap: bool = False
    _clock: ClockQuality = ClockQuality.SYNCED

    def add(self, value: float, t: float, clock: ClockQuality, out: list[SampleBlock]) -> None:
        """Add one sample taken at ``t``."""
        if not self._samples:
            self._first_time = t
            self._first_index = self.next_index
            self._clock = clock
        self._samples.append(value)
        self.next_index += 1
        if len(self._samples) >= self.block_len:
            self.flush(out)

    def add_many(self, values: Sequence[float], t_last: float, clock: ClockQuality, out: list[SampleBlock]) -> None:
        """Add consecutive samples, the last one taken at ``t_last``."""
        dt = 1.0 / self.sample_rate_hz
        t0 = t_last - (len(values) - 1) * dt
        for k, v in enumerate(values):
            self.add(v, t0 + k * dt, clock, out)

    def gap(self, lost_samples: int, out: list[SampleBlock]) -> None:
        """Samples were lost: close the current block; the next one starts ``lost_samples`` later."""
        self.flush(out)
        self.next_index += max(0, lost_samples)
        self._gap = True

    def flush(self, out: list[SampleBlock]) -> None:
        if not self._samples:
            return
        out.append(
            SampleBlock(
                device_id=self.device_id,
                channel=self.channel,
                sample_rate_hz=self.sample_rate_hz,
                first_sample_time=self._first_time,
                samples=np.asarray(self._samples, dtype=np.float64),
                unit=self.unit,
                first_index=self._first_index,
                gap_before=self._gap,
                clock=self._clock,
            )
        )
        self._samples = []
        self._gap = False
