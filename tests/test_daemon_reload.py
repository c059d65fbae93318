"""`systemctl reload` as systemd sees it: every RELOADING=1 is followed by READY=1, with a broken
file as with a good one; a broken file keeps the running config and STATUS= says so."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from tests.daemon_harness import FIXTURES, DaemonProcess, events_named, replay_device, write_config

VITALS = FIXTURES / "vitals" / "patient-a.jsonl"


async def _after_reloading(d: DaemonProcess, start: int, within_s: float = 20.0) -> list[str]:
    """Notification lines from the first RELOADING=1 at or after ``start`` up to its READY=1."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        d.poll_notifications()
        lines = d.notifications[start:]
        if "RELOADING=1" in lines:
            tail = lines[lines.index("RELOADING=1"):]
            if "READY=1" in tail:
                return tail[: tail.index("READY=1") + 2]  # READY=1 and the STATUS= sent with it
        await asyncio.sleep(0.1)
    raise AssertionError(f"no RELOADING=1 … READY=1 within {within_s} s: {d.notifications[start:]}")


async def test_reload_ends_ready_with_a_broken_and_with_a_good_config(tmp_path: Path, daemon_factory: Any) -> None:
    cfg = write_config(tmp_path, broker_url="mqtt://127.0.0.1:9",
                       patients={"p-a": [replay_device("dev-a", vitals=VITALS, speed=5, loop=True)]})
    good = cfg.read_text()
    d = daemon_factory(cfg)
    d.start()

    cfg.write_text(good.replace("patients:", "patients:\n  - oops: [unclosed"))
    mark = len(d.notifications)
    d.signal(signal.SIGHUP)
    seen = await _after_reloading(d, mark)
    status = next(s for s in seen if s.startswith("STATUS="))
    assert "config reload failed, previous config still running" in status
    assert d.proc is not None and d.proc.poll() is None
    assert events_named(d.log_events(), "config_reload_failed")[-1]["kept"] == "previous config"

    cfg.write_text(good.replace("speed: 5", "speed: 7"))
    mark = len(d.notifications)
    d.signal(signal.SIGHUP)
    seen = await _after_reloading(d, mark)
    status = next(s for s in seen if s.startswith("STATUS="))
    assert "reload failed" not in status and "devices up" in status
    assert events_named(d.log_events(), "config_reloaded")[-1]["restarted"] == ["dev-a"]
    assert d.stop() == 0
