"""What an ECG channel reports from a block: readings, validity and rhythm changes, beats."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.readings import VitalReading


@dataclass(frozen=True, slots=True)
class ValidityChange:
    time: float
    valid: bool
    detail: str  # the quality verdict that caused it
    onset_time: float | None = None  # a raise: the start of the first bad window behind it


@dataclass(frozen=True, slots=True)
class RhythmEvent:
    time: float
    condition: str  # VENTRICULAR_FIBRILLATION, ASYSTOLE or VENTRICULAR_TACHYCARDIA
    active: bool
    onset_time: float


@dataclass(slots=True, init=False)
class EcgOutput:
    readings: list[VitalReading]
    changes: list[ValidityChange]
    rhythm: list[RhythmEvent]
    beats: list[int]  # sample indices of the beats detected
    unreadable: list[float]  # times from which beat readings stopped being released (bad windows, flagged samples)
    dropped_blocks: int

    def __init__(
        self,
        readings: list[VitalReading] | None = None,
        changes: list[ValidityChange] | None = None,
        rhythm: list[RhythmEvent] | None = None,
        beats: list[int] | None = None,
        unreadable: list[float] | None = None,
        dropped_blocks: int = 0,
    ) -> None:
        # Written out: the generated __init__ calls a factory per list, and one output is made
        # for every block that arrives.
        self.readings = [] if readings is None else readings
        self.changes = [] if changes is None else changes
        self.rhythm = [] if rhythm is None else rhythm
        self.beats = [] if beats is None else beats
        self.unreadable = [] if unreadable is None else unreadable
        self.dropped_blocks = dropped_blocks
