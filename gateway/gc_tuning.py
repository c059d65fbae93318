"""Garbage-collector settings for the long-running daemon.

CPython's cycle collector runs a young-generation pass every 700 net container allocations
(its default since the 1990s).  Reference counting already frees almost everything the daemon
makes (records, readings, futures); what a young pass finds here is little, while each pass and
the older-generation passes they trigger walk every live container — with a backlog of records in
flight, tens of thousands.  ``bench/outbox_crypto.py`` prints the outbox's sealed intake with these
settings and with Python's defaults side by side: 0.99-1.08x the rate on an idle machine (within
its run-to-run noise), up to 1.2x when other processes share the caches (the walks are memory-bound).  In the demo's
steady state the collector is ~0.3 % of the daemon's CPU either way: this is for bursts.

* ``GEN0_THRESHOLD`` (5,000): fewer young passes; garbage in reference cycles waits a little
  longer (a few hundred kB at most, within ``bench/daemon_footprint.py``'s figures).
* ``freeze_startup_heap()``: once start-up is over, the objects it left (modules, the config,
  pydantic's schemas, numpy and scipy) move to the permanent generation (``gc.freeze``), so later
  full passes stop walking them.  They are still freed by reference counting if released.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 5_000


def configure() -> tuple[int, int, int]:
    """Raise the young-generation threshold (older generations keep theirs); returns the settings."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    return gc.get_threshold()


def freeze_startup_heap() -> int:
    """Collect start-up's garbage, then exclude what survives from later collections; returns how
    many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
