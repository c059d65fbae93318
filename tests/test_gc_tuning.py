"""The daemon's garbage-collector settings (gateway/gc_tuning.py), run in a child interpreter:
they are process-wide and must not leak into the test process."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import gc, json
from gateway import gc_tuning
before = gc.get_threshold()
after = gc_tuning.configure()
junk = [[i] for i in range(1000)]          # alive at the freeze: frozen
cycle = []; cycle.append(cycle); del cycle  # garbage at the freeze: collected first, not frozen
frozen = gc_tuning.freeze_startup_heap()
print(json.dumps({"before": before, "after": after, "frozen": frozen, "tracked": len(gc.get_objects())}))
"""


def test_configure_raises_only_the_young_threshold_and_freeze_moves_the_startup_heap_out() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got["before"][0] == 700  # CPython's default, which this module is about
    assert got["after"] == [5000, got["before"][1], got["before"][2]]
    # everything that survived start-up (at least our 1,000 lists) is now out of the collector's walks
    assert got["frozen"] >= 1000
    assert got["tracked"] < 100  # what a collection still walks: only objects made after the freeze

