"""A long billing replay on the real outbox, run as a child process so a test can kill -9 it.

    python -m tests.billing_replay_worker DB [--days N]

Two patients, ``N`` days (default 45) of readings every 15 minutes on a fixed pattern of days; the
ledger's clock follows the readings (as a synchronised host clock would) and ticks every hour.
Prints ``day K`` after each day, flushed, so the parent can choose when to kill.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.billing.ledger import BillingLedger, PatientBilling
from gateway.clock import ManualClock
from gateway.config.billing import BillingSection
from gateway.outbox import Outbox
from gateway.records import ClockQuality

START = datetime(2026, 3, 1, tzinfo=ZoneInfo("UTC")).timestamp()
PATIENTS = {
    "p1": PatientBilling(ZoneInfo("America/Chicago"), devices=frozenset({"ox1", "cuff1"})),
    "p2": PatientBilling(ZoneInfo("Europe/Berlin"), devices=frozenset({"scale2"})),
}


def p2_measures(day: int) -> bool:
    return day % 3 == 0  # every third day: 10 days in the first 30, 5 in the next 15


def schedule(days: int) -> Iterator[tuple[int, float, str, str]]:
    """(day, t, patient, device) in time order."""
    for day in range(days):
        for q in range(96):
            t = START + day * 86400 + q * 900
            # p1 measures 14:00-24:00 UTC (daytime in Chicago, same date) and skips one day a week
            if day % 7 != 6 and q >= 56:
                yield day, t, "p1", "ox1" if q % 2 else "cuff1"
            if p2_measures(day) and q in (30, 31):
                yield day, t, "p2", "scale2"


async def replay(db: Path, days: int) -> None:
    box = await Outbox.open(db, gateway_id="gw-crash", commit_interval_ms=5)
    clock = ManualClock(t=START, real_monotonic=True)
    ledger = await BillingLedger.open(box, BillingSection(), gateway_id="gw-crash", patients=PATIENTS, clock=clock)
    last_day = -1
    next_tick = START + 3600
    for day, t, patient, device in schedule(days):
        clock.t = t
        if t >= next_tick:
            await ledger.tick(t)
            next_tick += 3600
        await ledger.on_reading(patient, device, t, ClockQuality.SYNCED)
        if day != last_day:
            print(f"day {day}", flush=True)
            last_day = day
    end = START + (days + 40) * 86400  # far enough: every period closed
    clock.t = end
    await ledger.tick(end)
    await ledger.flush()
    await box.close()
    print("done", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--days", type=int, default=45)
    args = ap.parse_args()
    asyncio.run(replay(args.db, args.days))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def expected_days() -> dict[str, list[str]]:
    """Local dates with readings per patient (for the tests' own recomputation)."""
    out: dict[str, set[str]] = {p: set() for p in PATIENTS}
    for _, t, patient, _ in schedule(45):
        out[patient].add(datetime.fromtimestamp(t, PATIENTS[patient].timezone).date().isoformat())
    return {p: sorted(v) for p, v in out.items()}
