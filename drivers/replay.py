"""Replay driver: plays a recording from ``hil_fixtures/`` through the same pipeline as a live device.

Two kinds of recording, alone or together:

* a **vitals log** (JSON lines), one object per line with ``t`` = seconds from the start and either
  ``{"vital": "spo2", "value": 97, "flags": ["artifact"]}`` (unit defaults to the vital's UCUM unit;
  ``value: null`` means "no value") or ``{"event": "sensor_off", "detail": "..."}``;
* an **ECG record** in WFDB format, streamed in blocks of ``block_ms`` as a chest strap would.

Timing is deterministic: reading times are ``start_time + t`` (recording time), whatever the
playback ``speed``; only the pacing against the wall clock changes.  A malformed line is logged and
skipped with its line number — a bad recording never stops the daemon.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drivers.replay_spec import ReplaySettings
from drivers.wfdb_reader import WfdbFormatError, read_record
from gateway.driver_api import DeviceContext, Driver, DriverConfigError, DriverFinished
from gateway.readings import (
    VITAL_UNITS,
    ClockQuality,
    DeviceEvent,
    DeviceFlag,
    DeviceState,
    Reading,
    SampleBlock,
    Vital,
    VitalReading,
)


class RecordingError(ValueError):
    """A line of a vitals recording that cannot be understood (with its line number)."""


def parse_vitals_line(line: str, lineno: int) -> tuple[float, dict[str, Any]] | None:
    """Parse one JSON line of a vitals log into (t, fields); None for blank/comment lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordingError(f"line {lineno}: not JSON ({e.msg})") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), int | float):
        raise RecordingError(f"line {lineno}: expected an object with a numeric 't'")
    if not math.isfinite(obj["t"]):  # JSON as Python reads it has NaN and Infinity
        raise RecordingError(f"line {lineno}: 't' must be a finite number, not {obj['t']!r}")
    if "vital" in obj:
        try:
            Vital(obj["vital"])
        except ValueError as e:
            raise RecordingError(f"line {lineno}: unknown vital {obj['vital']!r}") from e
        value = obj.get("value")
        if value is not None and not isinstance(value, int | float):
            raise RecordingError(f"line {lineno}: value must be a number or null")
        for f in obj.get("flags", []):
            try:
                DeviceFlag(f)
            except ValueError as e:
                raise RecordingError(f"line {lineno}: unknown flag {f!r}") from e
    elif "event" in obj:
        try:
            DeviceState(obj["event"])
        except ValueError as e:
            raise RecordingError(f"line {lineno}: unknown event {obj['event']!r}") from e
    else:
        raise RecordingError(f"line {lineno}: needs 'vital' or 'event'")
    return float(obj["t"]), obj


class ReplayDriver(Driver):
    settings: ReplaySettings

    def __init__(self, ctx: DeviceContext, settings: ReplaySettings) -> None:
        super().__init__(ctx, settings)
        self._vitals: list[tuple[float, dict[str, Any]]] = []
        self._ecg: np.ndarray[Any, np.dtype[np.float64]] | None = None
        self._fs = 0.0
        self._duration = 0.0

    def _resolve(self, p: Path) -> Path:
        return p if p.is_absolute() else self.ctx.base_dir / p

    async def connect(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        s = self.settings
        if s.vitals is not None:
            path = self._resolve(s.vitals)
            try:
                lines = path.read_text().splitlines()
            except OSError as e:
                raise DriverConfigError(f"cannot read recording {path}: {e}") from e
            for n, line in enumerate(lines, 1):
                try:
                    parsed = parse_vitals_line(line, n)
                except RecordingError as e:
                    self.ctx.log.warning("replay_line_skipped", file=str(path), error=str(e))
                    continue
                if parsed is not None:
                    self._vitals.append(parsed)
            self._vitals.sort(key=lambda x: x[0])
            if self._vitals:
                self._duration = max(self._duration, self._vitals[-1][0] + 1.0)
        if s.ecg is not None:
            path = self._resolve(s.ecg)
            try:
                rec = read_record(path)
            except (OSError, WfdbFormatError) as e:
                raise DriverConfigError(f"cannot read ECG record {path}: {e}") from e
            if s.ecg_channel >= rec.signals.shape[1]:
                raise DriverConfigError(f"{path}: no signal {s.ecg_channel} (has {rec.signals.shape[1]})")
            self._ecg = np.ascontiguousarray(rec.signals[:, s.ecg_channel]) * 1000.0  # mV -> uV
            self._fs = rec.fs
            self._duration = max(self._duration, len(self._ecg) / rec.fs)

    async def close(self) -> None:
        self._vitals = []
        self._ecg = None

    def _events(self, loop_index: int, t0: float) -> Iterator[tuple[float, int, Reading]]:
        """Readings of one pass, merged in time order; (recording time, tie-break, reading)."""
        offset = loop_index * self._duration
        dev = self.ctx.device_id
        streams: list[Iterator[tuple[float, int, Reading]]] = []

        def vitals() -> Iterator[tuple[float, int, Reading]]:
            for t, obj in self._vitals:
                at = t0 + offset + t
                if "vital" in obj:
                    vital = Vital(obj["vital"])
                    yield (
                        offset + t,
                        0,
                        VitalReading(
                            device_id=dev,
                            vital=vital,
                            value=None if obj.get("value") is None else float(obj["value"]),
                            unit=str(obj.get("unit", VITAL_UNITS[vital])),
                            time=at,
                            clock=self._clock,
                            flags=frozenset(DeviceFlag(f) for f in obj.get("flags", [])),
                        ),
                    )
                else:
                    yield (
                        offset + t,
                        0,
                        DeviceEvent(
                            device_id=dev,
                            state=DeviceState(obj["event"]),
                            time=at,
                            detail=str(obj.get("detail", "")),
                            clock=self._clock,
                        ),
                    )

        def ecg() -> Iterator[tuple[float, int, Reading]]:
            assert self._ecg is not None
            block = max(1, round(self.settings.block_ms * self._fs / 1000.0))
            n_total = len(self._ecg)
            base_index = loop_index * n_total
            for start in range(0, n_total, block):
                chunk = self._ecg[start : start + block]
                t_first = offset + start / self._fs
                # A strap sends a block once its last sample exists: pace by the block's end.
                t_sent = offset + (start + len(chunk)) / self._fs
                yield (
                    t_sent,
                    1,
                    SampleBlock(
                        device_id=dev,
                        channel="ecg",
                        sample_rate_hz=self._fs,
                        first_sample_time=t0 + t_first,
                        samples=chunk.copy(),
                        unit="uV",
                        first_index=base_index + start,
                        clock=self._clock,
                    ),
                )

        if self._vitals:
            streams.append(vitals())
        if self._ecg is not None:
            streams.append(ecg())
        return heapq.merge(*streams, key=lambda x: (x[0], x[1]))

    async def readings(self) -> AsyncIterator[Reading]:
        s = self.settings
        clock = self.ctx.clock
        if s.start_time is not None:
            t0 = s.start_time.timestamp()
            self._clock = ClockQuality.SYNCED
        else:
            t0 = clock.now()
            self._clock = clock.quality()
        mono0 = clock.monotonic()
        loop_index = 0
        while True:
            for n, (t_rec, _, reading) in enumerate(self._events(loop_index, t0)):
                if s.speed > 0:
                    delay = mono0 + t_rec / s.speed - clock.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif n % 256 == 0:
                    await asyncio.sleep(0)  # as fast as possible, but let the loop breathe
                yield reading
            if not s.loop or self._duration <= 0:
                raise DriverFinished("recording finished")
            loop_index += 1

    _clock: ClockQuality = ClockQuality.SYNCED
