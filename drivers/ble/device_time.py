"""Device clocks: put a device's own timestamps on the host's time line, and record how.

Cuffs, meters, scales and thermometers stamp readings with a clock the user set once (or never):
it drifts, ignores daylight saving, or restarts at 2000-01-01 after a battery change.  Two facts
let us correct it:

* the Current Time characteristic (0x2A2B), read at connect, gives device-now against host-now:
  the offset applies to every stored reading of that session (``source="current-time"``);
* without it, a plausible device time is kept (``ClockQuality.DEVICE``) and an implausible one
  (unset, or in the future) is replaced by the time of receipt.  A device's clock tells local
  wall time (Bluetooth's Current Time is local time; a clock set by hand shows what the patient's
  wall clock shows): it is read in the patient's zone, so a cuff's 02:30 in Chicago is 08:30
  UTC, not 02:30 UTC, 6 h and a day of data earlier.

Every corrected reading keeps the device's own time in ``device_time`` so the correction can be
audited, and the driver reports the offset in its ``connected`` event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from drivers.ble.wire import DeviceDateTime, Reader
from gateway.clock import PLAUSIBLE_EPOCH, Clock
from gateway.readings import ClockQuality

CURRENT_TIME_SERVICE = "00001805-0000-1000-8000-00805f9b34fb"
CURRENT_TIME = "00002a2b-0000-1000-8000-00805f9b34fb"

# Readings older than this before the software's release year cannot be real: the clock is unset.
_OLDEST_PLAUSIBLE = PLAUSIBLE_EPOCH - 5 * 365 * 86400
_FUTURE_TOLERANCE_S = 300.0
# A device's memory holds at most months of readings: a corrected time older than this is a stamp
# from before the clock restarted, not a reading.
_MAX_STORED_AGE_S = 366 * 86400.0


def decode_current_time(data: bytes) -> DeviceDateTime:
    """Current Time 0x2A2B: Exact Time 256 (date-time, day of week, 1/256 s) and adjust reason."""
    r = Reader(data)
    dt = r.date_time("current time")
    r.u8("day of week")
    r.u8("fractions256")
    return dt


@dataclass(frozen=True, slots=True)
class ClockCorrection:
    offset_s: float  # add to a device time to get host time
    source: str
    measured_at: float  # host time of the measurement

    def as_dict(self) -> dict[str, float | str]:
        return {"clock_offset_s": round(self.offset_s, 3), "clock_source": self.source}


@dataclass(frozen=True, slots=True)
class Placement:
    time: float
    clock: ClockQuality
    device_time: float | None


class DeviceClock:
    def __init__(self, host: Clock, zone: tzinfo | None = None) -> None:
        self._host = host
        self._zone = zone  # where the device's wall clock is read; None: as UTC
        self.correction: ClockCorrection | None = None

    def _wall(self, stamp: float) -> float:
        """A device wall-clock time (naive, as seconds read as UTC) on the host's time line."""
        if self._zone is None:
            return stamp
        return datetime.fromtimestamp(stamp, UTC).replace(tzinfo=self._zone).timestamp()

    def calibrate(self, device_now: DeviceDateTime, host_now: float | None = None) -> ClockCorrection | None:
        """Measure the offset from a Current Time read; None when the device does not know the date."""
        dev = device_now.as_naive_unix()
        if dev is None:
            return None
        now = self._host.now() if host_now is None else host_now
        self.correction = ClockCorrection(now - dev, "current-time", now)
        return self.correction

    def place(self, stamp: float | None, received_at: float, clock_not_set: bool = False) -> Placement:
        """Where a reading goes on the host time line.  ``stamp``: the device time (naive-UTC s) or None."""
        host_quality = self._host.quality()
        if stamp is None:
            return Placement(received_at, host_quality, None)
        if self.correction is not None:
            # Corrected against an unsynchronised host is only as good as the host.
            quality = ClockQuality.CORRECTED if host_quality is ClockQuality.SYNCED else host_quality
            t = stamp + self.correction.offset_s
            if not clock_not_set:
                return Placement(t, quality, stamp)
            # The device says its clock is not set (a glucose meter's time fault, a battery change
            # that restarted it at 2000-01-01): it still runs, and Current Time read from the same
            # clock places the readings it stamped since, which receipt time would put all at
            # "now" (an old low read as a current one).  A reading stamped before the clock
            # restarted comes out in the future or years back: receipt time, as before.
            if received_at - _MAX_STORED_AGE_S <= t <= received_at + _FUTURE_TOLERANCE_S:
                return Placement(t, quality, stamp)
        t = self._wall(stamp)
        if clock_not_set or t < _OLDEST_PLAUSIBLE or t > received_at + _FUTURE_TOLERANCE_S:
            return Placement(received_at, host_quality, stamp)
        return Placement(t, ClockQuality.DEVICE, stamp)
