"""What the billing ledger costs on the daemon's hot path.  (prints figures; not a test)

* hot path   — ``BillingLedger.on_reading`` for readings of a day already counted (memory only,
               plus a background state save every ``persist_interval_s``), on the real outbox;
* new day    — ``on_reading`` for the first reading of a day: state (and any record) committed
               before it returns, so this includes one group commit of the outbox;
* rules only — ``PatientBook.observe`` alone (what ``billing simulate`` runs), readings/s;
* state size — bytes of one patient's saved state with a full 30-day period.

    uv run python bench/billing_ledger.py
    uv run python bench/billing_ledger.py --readings 200000 --commit-ms 200
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from gateway.billing.book import PatientBook
from gateway.billing.days import day_start
from gateway.billing.ledger import BillingLedger, PatientBilling
from gateway.clock import PLAUSIBLE_EPOCH, ManualClock
from gateway.config.billing import BillingSection
from gateway.outbox import Outbox
from gateway.records import ClockQuality

TZ = ZoneInfo("America/Chicago")
T0 = PLAUSIBLE_EPOCH + 60 * 86400


async def ledger_figures(readings: int, days: int, commit_ms: int, folder: Path) -> None:
    box = await Outbox.open(folder / "bench.sqlite3", gateway_id="bench", commit_interval_ms=commit_ms)
    clock = ManualClock(t=T0, real_monotonic=True)
    patients = {"p1": PatientBilling(TZ, devices=frozenset({"ox1"}))}
    ledger = await BillingLedger.open(box, BillingSection(), gateway_id="bench", patients=patients, clock=clock)
    await ledger.on_reading("p1", "ox1", clock.t, ClockQuality.SYNCED)  # the day is counted
    t0 = time.perf_counter()
    for i in range(readings):
        clock.t = T0 + i * 0.01
        await ledger.on_reading("p1", "ox1", clock.t, ClockQuality.SYNCED)
    hot = time.perf_counter() - t0
    t0 = time.perf_counter()
    for d in range(1, days + 1):
        clock.t = T0 + d * 86400
        await ledger.on_reading("p1", "ox1", clock.t, ClockQuality.SYNCED)
    new_day = time.perf_counter() - t0
    await ledger.flush()
    await box.close()
    print(f"hot path     {hot / readings * 1e6:8.1f} us/reading  ({readings / hot:,.0f} readings/s, same day)")
    print(f"new day      {new_day / days * 1e3:8.1f} ms/day      (commit interval {commit_ms} ms)")


def rules_figures(readings: int) -> None:
    book = PatientBook("p1", BillingSection(), gateway_id="bench", tz=TZ)
    start = day_start(date(2026, 4, 1), TZ)
    step = 29.9 * 86400 / readings  # every day of one 30-day period
    t0 = time.perf_counter()
    for i in range(readings):
        book.observe("ox1", start + i * step, ClockQuality.SYNCED)
    dt = time.perf_counter() - t0
    assert book.current is not None and len(book.current.days) == 30
    print(f"rules only   {readings / dt:,.0f} readings/s")
    print(f"state size   {len(book.to_state()):,} bytes (30 days of data, one patient)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--commit-ms", type=int, default=200)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        asyncio.run(ledger_figures(args.readings, args.days, args.commit_ms, Path(d)))
    rules_figures(args.readings)


if __name__ == "__main__":
    main()
