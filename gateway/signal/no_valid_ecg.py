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
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
    raised: bool = False
    _recent: int = 0  # the last ``of_windows`` windows, newest in the lowest bit, set when noisy
    _good_run: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.bad_windows <= self.of_windows or self.clear_windows < 1:
            raise ValueError(
                f"need 1 <= bad_windows <= of_windows and clear_windows >= 1, got "
                f"{self.bad_windows}, {self.of_windows}, {self.clear_windows}"
            )

    def window(self, verdict: Verdict) -> bool | None:
        """Take the next window's verdict; the alarm's new state when it changes, else None."""
        noisy = verdict is Verdict.NOISY
        self._recent = ((self._recent << 1) | noisy) & ((1 << self.of_windows) - 1)
        self._good_run = self._good_run + 1 if verdict is Verdict.GOOD else 0
        if not self.raised and (
            verdict is Verdict.NO_SIGNAL or (noisy and self._recent.bit_count() >= self.bad_windows)
        ):
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
        self._recent = 0
        return was

    def restart(self, *, raised: bool) -> None:
        """A new process goes on with the alarm as it was (``raised``), with no window history."""
        self.raised = raised
        self._recent = self._good_run = 0
