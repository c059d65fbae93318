"""What a restarted daemon needs to go on with an asystole episode the last process raised."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gateway.signal import rpeak_detector


@dataclass(frozen=True, slots=True)
class StandstillMemory:
    """What a new process needs to go on with an asystole episode as this one would: the patient's
    QRS energies and the R-peak detector's levels when it was raised.  Without them the new
    detector learns the standstill's P and T waves as the signal and takes them for QRS, ending
    the alarm while the heart is still.  Taken once, at the raise, so the saved state does
    not change (nor get written again) while the episode lasts."""

    fs: float
    qrs_reference: tuple[float, ...]
    levels: rpeak_detector.Levels

    def to_json(self) -> list[Any]:
        lv = self.levels
        levels = [lv.signal_level, lv.noise_level, lv.learn_max, lv.last_beat_energy, lv.n_noise]
        return [self.fs, list(self.qrs_reference), levels]

    @classmethod
    def from_json(cls, doc: Any) -> StandstillMemory:
        """Raises ValueError or TypeError when ``doc`` is not what ``to_json`` writes."""
        fs, qrs, (signal, noise, learn_max, last_energy, n_noise) = doc
        values = [float(fs), signal, noise, learn_max, last_energy, *qrs]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values) or not float(fs) > 0:
            raise ValueError("standstill memory: not finite numbers")
        levels = rpeak_detector.Levels(float(signal), float(noise), float(learn_max), float(last_energy), int(n_noise))
        return cls(float(fs), tuple(float(q) for q in qrs), levels)
