"""A broker outage in the running daemon: a warning naming the cause, then a recovery line, both at
syslog priority 4 so ``journalctl -u iomt-gateway -p warning`` shows them.

The daemon's threshold is ``upstream.outage_warning_s`` (default 60 s); here 3 s, so the test waits
seconds, not a minute.  The schedule itself (60 s, then 2, 4, 8 ... minutes) is tested on a manual clock
in test_uplink_outage.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.broker import MosquittoBroker, Subscriber
from tests.daemon_harness import FIXTURES, events_named, replay_device, write_config


async def _event(d: Any, name: str, within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = events_named(d.log_events(), name)
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {name} within {within_s} s:\n{d.log_tail()}")


async def test_broker_outage_warns_with_the_cause_and_logs_recovery(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber, daemon_factory: Any
) -> None:
    cfg = write_config(
        tmp_path,
        broker_url=broker.url,
        patients={"p-a": [replay_device("ox-a", vitals=FIXTURES / "vitals" / "patient-a.jsonl", speed=5)]},
        extra={"upstream": {"outage_warning_s": 3, "backoff_max_s": 1.0}},
    )
    d = daemon_factory(cfg)
    d.start()
    await subscriber.wait_until(lambda rs: any(r.topic.endswith("/status") for r in rs))
    assert events_named(d.log_events(), "uplink_unreachable") == []
    broker.stop()
    stopped = time.monotonic()
    warning = await _event(d, "uplink_unreachable", within_s=30)
    warned_after = time.monotonic() - stopped
    assert warning["level"] == "warning"
    assert warning["cause"] == "refused", warning
    assert warning["port"] == broker.port and warning["down_s"] >= 3
    assert "is the broker running" in warning["hint"]
    broker.start()
    recovered = await _event(d, "uplink_recovered", within_s=30)
    assert recovered["level"] == "warning" and recovered["last_cause"] == "refused"
    assert recovered["down_s"] >= warning["down_s"]
    assert d.stop() == 0
    # What journalctl -p warning filters on: the <4> syslog prefix of those two lines.
    raw = d.log_path.read_text().splitlines()
    for name in ("uplink_unreachable", "uplink_recovered"):
        line = next(x for x in raw if f'"event": "{name}"' in x)
        assert line.startswith("<4>"), line
    print(f"warning {warned_after:.1f} s after the broker stopped (threshold 3 s)")
