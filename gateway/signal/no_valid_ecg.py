"""When to raise and clear the "no valid ECG" technical alarm, from the quality windows' verdicts.

The channel holds beat readings back from the first bad window on (``ecg_channel``); the alarm
is a separate decision, because what a technician needs from it is different: noise that lasts,
not every artefact.  Raised and cleared window by window, it came and went 168 times an hour on
MIT-BIH with a 3 s noise burst every 20 s, and 7 times an hour on the clean records
(``bench/ecg_quality.py``).

* A window with no signal (flat or saturated: an electrode off, an amplifier at its rail)
  raises it at once.
* Noisy windows raise it once ``bad_windows`` of the last ``of_windows`` were noisy: a single
  noisy window (a cough, a tug on a lead) raises nothing, its beats are held back all the same.
* It clears after ``clear_windows`` good windows in a row, so that intermittent noise keeps one
  alarm on for the stretch instead of raising a new one for each burst.
* A window that is neither (noise read during VT, whose wide complexes look like it) counts as
  neither bad nor good: it breaks a run of good windows and adds nothing toward a raise.
* Readings held back for ``held_windows`` windows in a row with nothing else said raise it too,
  on a window that is not good, which may be the first of the two that release the readings
  (detail ``"unreadable"``): windows that alternate good, noisy and neither raise nothing by the
  rules above, yet keep the heart rate back for as long as they last (a raise on a window that is
  neither noisy nor without signal is this one).  Without it, on vfdb as recorded, the heart rate
  was held back with nothing said instead 6.0 % of the time, 47 times for 10 s or more (a 21 s
  polymorphic flutter in 609, 140 s of 418): a monitor that looks blank, where it is expected to
  say it cannot read the ECG.  With it: 4.4 %, never for more than 15 s (``bench/ecg_quality.py
  --vfdb``, ``blind``).  Raised on a good window as well, it came 0.6 times an hour more often on
  vfdb and on MIT-BIH with electrode motion at 6 dB, and cleared 16 s later with the rate back.
  The channel says when the readings held back are explained (a VT or asystole alarm on, or a
  lead off the device reports): those windows are not counted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

UNREADABLE = "unreadable"  # the detail of a raise for readings held back (module docstring)


class Verdict(enum.Enum):
    GOOD = "good"
    NOISY = "noisy"
    NO_SIGNAL = "no_signal"
    NEITHER = "neither"


@dataclass(slots=True)
class NoValidEcgAlarm:
    bad_windows: int = 2
    of_windows: int = 3
    clear_windows: int = 4
    held_windows: int = 3  # 0: readings held back raise nothing by themselves
    raised: bool = False
    _recent: int = 0  # the last ``of_windows`` windows, newest in the lowest bit, set when noisy
    _good_run: int = 0
    _held: int = 0  # windows in a row after which the readings were held back, unexplained
    # What the last raise was for: the readings held back (detail "unreadable"), not the window's
    # own verdict.  A noisy window can be the one that raises it for them, before noise alone would.
    for_held: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.bad_windows <= self.of_windows or self.clear_windows < 1 or self.held_windows < 0:
            raise ValueError(
                f"need 1 <= bad_windows <= of_windows, clear_windows >= 1 and held_windows >= 0, got "
                f"{self.bad_windows}, {self.of_windows}, {self.clear_windows}, {self.held_windows}"
            )

    def window(self, verdict: Verdict, *, held: bool = False) -> bool | None:
        """Take the next window's verdict, and whether the readings are held back after it with
        nothing else to say why (``held``); the alarm's new state when it changes, else None."""
        noisy = verdict is Verdict.NOISY
        self._recent = ((self._recent << 1) | noisy) & ((1 << self.of_windows) - 1)
        self._good_run = self._good_run + 1 if verdict is Verdict.GOOD else 0
        self._held = self._held + 1 if held else 0
        if not self.raised:
            noise = verdict is Verdict.NO_SIGNAL or (noisy and self._recent.bit_count() >= self.bad_windows)
            # Not on a good window: it may be the first of the two that release the readings.
            if noise or (verdict is not Verdict.GOOD and 0 < self.held_windows <= self._held):
                self.for_held = not noise
                self.raised = True
                return True
        if self.raised and self._good_run >= self.clear_windows:
            self.raised = False
            return False
        return None

    def windows_back(self) -> int:
        """How many windows, the last one included, since the first bad one the alarm remembers:
        where the noise behind a raise began."""
        return max(1, self._recent.bit_length())

    def end(self) -> bool:
        """The rhythm explains the "noise" (VF or VT began): clear at once and forget the noisy
        windows.  Whether it was raised."""
        was, self.raised = self.raised, False
        self._recent = self._held = 0
        return was

    def explained(self) -> None:
        """The readings held back so far have a cause of their own (the device reports its lead
        off): they count toward no raise."""
        self._held = 0

    def restart(self, *, raised: bool) -> None:
        """A new process goes on with the alarm as it was (``raised``), with no window history."""
        self.raised = raised
        self._recent = self._good_run = self._held = 0
