"""Contec CMS50D+ legacy protocol: 5-byte packets, 60 per second, 19200 8O1.

Only the first byte of a packet has bit 7 set; there is no checksum, so a packet is accepted only
with bit 7 clear in its other four bytes and plausible values.  One random window in 32 passes
that, so while unlocked (at start, after any drop) the decoder locks on only when four packets in
a row, back to back at the 5-byte pitch of the 60/s stream, also agree the way 1/60 s apart
they must: same finger-out state, SpO2 within 2 %, pulse rate within 5 /min (or both missing).
Noise then yields no vitals (``bench/serial_decoders.py --noise-only``).

* b0: signal strength (low nibble), 0x10 finger out, 0x40 pulse beep
* b1: pleth waveform (0-127)
* b2: bar graph (low nibble), 0x10 probe error, 0x20 searching, 0x40 pulse-rate bit 7
* b3: pulse rate, low 7 bits; b4: SpO2
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.serial.framing import Dropped, FixedFramer
from drivers.serial.oximetry import StateEvents, oximeter_vitals
from drivers.serial.waveform import WaveformAssembler, back_dated_times
from gateway.readings import ClockQuality, DeviceFlag, Reading, SampleBlock

PACKET_RATE_HZ = 60.0
PR_MISSING = 255
SPO2_MISSING = 127


@dataclass(frozen=True, slots=True)
class ContecPacket:
    signal: int
    finger_out: bool
    beep: bool
    pleth: int
    bargraph: int
    probe_error: bool
    searching: bool
    pulse_rate: int | None
    spo2: int | None

    @property
    def flags(self) -> frozenset[DeviceFlag]:
        flags: set[DeviceFlag] = set()
        if self.finger_out:
            flags.add(DeviceFlag.SENSOR_OFF)
        if self.probe_error:
            flags.add(DeviceFlag.SENSOR_FAULT)
        if self.searching:
            flags.add(DeviceFlag.SEARCHING)
        return frozenset(flags)


def _parse(buf: bytes | bytearray, i: int) -> ContecPacket | None:
    b0, b1, b2, b3, b4 = buf[i], buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]
    if not b0 & 0x80 or (b1 | b2 | b3 | b4) & 0x80:
        return None
    pr = ((b2 & 0x40) << 1) | b3
    # 0 is what the device sends while it has no reading yet; neither is a live patient's value.
    return ContecPacket(
        signal=b0 & 0x0F,
        finger_out=bool(b0 & 0x10),
        beep=bool(b0 & 0x40),
        pleth=b1,
        bargraph=b2 & 0x0F,
        probe_error=bool(b2 & 0x10),
        searching=bool(b2 & 0x20),
        pulse_rate=None if pr in (0, PR_MISSING) else pr,
        spo2=None if b4 in (0, SPO2_MISSING) or b4 > 100 else b4,
    )


LOCK_CONFIRM = 3  # packets behind a candidate that must agree with it before the decoder locks on
SPO2_STEP = 2  # most SpO2 (%) can change between consecutive packets
PR_STEP = 5  # most pulse rate (/min) can change between consecutive packets


def _near(a: int | None, b: int | None, step: int) -> bool:
    return a == b if a is None or b is None else abs(a - b) <= step


def _continues(a: ContecPacket, b: ContecPacket) -> bool:
    """``b`` can follow ``a`` 1/60 s later on a real device."""
    return (
        a.finger_out == b.finger_out
        and _near(a.spo2, b.spo2, SPO2_STEP)
        and _near(a.pulse_rate, b.pulse_rate, PR_STEP)
    )


def contec_decoder() -> FixedFramer[ContecPacket]:
    """Bytes -> packets and drop reports; the framer carries the state and the counters."""
    return FixedFramer(5, _parse, reason="no sync or bit 7 set in payload", confirm=LOCK_CONFIRM, agree=_continues)


@dataclass
class ContecTranslator:
    """Pleth blocks of 30 samples (0.5 s); SpO2 and pulse rate once per ``vitals_every`` packets.

    Every packet repeats the current numbers; sending all 60/s upstream would add nothing.
    """

    device_id: str
    vitals_every: int = 60
    pleth: WaveformAssembler = field(init=False)
    events: StateEvents = field(init=False)
    _count: int = 0

    def __post_init__(self) -> None:
        self.pleth = WaveformAssembler(self.device_id, "pleth", PACKET_RATE_HZ, "1", 30)
        self.events = StateEvents(self.device_id)

    def duration(self, item: Any) -> float:
        return 1.0 / PACKET_RATE_HZ if isinstance(item, ContecPacket) else 0.0

    def translate(self, items: Sequence[Any], t_end: float, clock: ClockQuality) -> list[Reading]:
        out: list[Reading] = []
        blocks: list[SampleBlock] = []
        times = back_dated_times(items, t_end, self.duration)
        for it, t in zip(items, times, strict=True):
            if isinstance(it, ContecPacket):
                flags = it.flags
                before = self.events.sensor_off
                self.events.update(flags, t, clock, out, battery=False)
                self.pleth.add(float(it.pleth), t, clock, blocks)
                # A finger going in or out is reported at once, not at the next 1 s tick.
                if self._count % self.vitals_every == 0 or before != self.events.sensor_off:
                    self._count = 0
                    out.extend(blocks)
                    blocks.clear()
                    out.extend(oximeter_vitals(self.device_id, it.pulse_rate, it.spo2, flags, t, clock))
                self._count += 1
            elif isinstance(it, Dropped):
                self.pleth.gap(max(1, round(it.count / 5)), blocks)
            out.extend(blocks)
            blocks.clear()
        return out

    def flush(self) -> list[Reading]:
        blocks: list[SampleBlock] = []
        self.pleth.flush(blocks)
        return list(blocks)
