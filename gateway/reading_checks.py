"""Whether a driver's reading can be placed at all: its time, and a sample block's rate and shape.

A value is judged later, and kept (``pipeline.is_valid``: a non-finite or implausible value is an
invalid reading, counted and summarised as such).  A reading whose time is not a moment, or a block
whose sample rate is not a rate, cannot be put in any summary period, strip or alarm: before,
they raised deep in the pipeline (``datetime.fromtimestamp(nan)``, a division by a rate of 0), and
a rate of 1e9 Hz made the evidence recorder size a ring of 10^10 samples for the block.  The
pipeline sets such a reading aside with the reason (``PipelineOutput.rejected``) and the daemon
says so in the journal, naming the device (``reading_rejected``).

The bounds are wide on purpose: a Raspberry Pi without a real-time clock may read 1970 until NTP
has synchronised, and its readings are flagged ``unsynced``, not lost.
"""

from __future__ import annotations

import math

from gateway.readings import DeviceEvent, Reading, SampleBlock

EARLIEST_S = 0.0  # 1970-01-01: an unsynchronised clock's readings are flagged, not rejected
LATEST_S = 253402300800.0  # 10000-01-01: the first moment no datetime holds
# No bedside waveform comes near it (ECG front-ends: up to 1-2 kHz; pleth: 75-500 Hz); above it a
# rate is a driver's error, and a few seconds of it would be gigabytes of strip buffer.
MAX_SAMPLE_RATE_HZ = 10_000.0


def unusable(reading: Reading) -> tuple[str, str] | None:
    """Why ``reading`` cannot be processed: (the field at fault, what is wrong with it); None when it can."""
    if isinstance(reading, SampleBlock):
        fs = reading.sample_rate_hz
        if not 0.0 < fs <= MAX_SAMPLE_RATE_HZ:
            return "sample_rate_hz", f"{fs!r} Hz is outside (0, {MAX_SAMPLE_RATE_HZ:g}]"
        if getattr(reading.samples, "ndim", None) != 1:
            return "samples", "not a one-dimensional array"
        field, t = "first_sample_time", reading.first_sample_time
    else:
        field, t = "time", reading.time
    if not EARLIEST_S <= t < LATEST_S:
        return field, f"{t!r} is not a Unix time from 1970 to 9999"
    return None


def battery(event: DeviceEvent) -> float | None:
    """The event's battery level when it is one (a share in percent), else None: a level that is
    not a number says nothing, and the event is kept without it."""
    pct = event.battery_pct
    return pct if pct is not None and math.isfinite(pct) and 0.0 <= pct <= 100.0 else None
