"""What every serial protocol module provides: a pure decoder and a translator to readings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.serial.framing import FramerStats
from gateway.readings import ClockQuality, Reading


class Decoder(Protocol):
    """Bytes in, frames and ``Dropped`` reports out; all state lives in the object."""

    @property
    def stats(self) -> FramerStats: ...

    def feed(self, data: bytes) -> list[Any]: ...

    def finish(self) -> list[Any]: ...


class Translator(Protocol):
    """Frames in, readings out.  Times are passed in: ``t_end`` is when the read holding them completed."""

    def translate(self, items: Sequence[Any], t_end: float, clock: ClockQuality) -> list[Reading]: ...

    def flush(self) -> list[Reading]:
        """End of the stream: return waveform samples still held back for a full block."""
        ...

    def duration(self, item: Any) -> float:
        """Wire time the item stands for (its frame period; 0 for drop reports)."""
        ...


@dataclass(frozen=True)
class ProtocolInfo:
    name: str
    baud: int
    serial_format: str  # data bits, parity, stop bits, e.g. "8N1"
    frame_period_s: float
    """Nominal time between frames; the silence timeout defaults to a multiple of it (at least 3 s)."""
    make_decoder: Callable[[], Decoder]
    make_translator: Callable[[str], Translator]
    summary: str

    @property
    def default_silence_s(self) -> float:
        return max(3.0, 5.0 * self.frame_period_s)
