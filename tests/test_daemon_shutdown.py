"""The daemon's own shutdown path, in process: what happens when its task is cancelled meanwhile."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from gateway import daemon as daemon_module
from gateway.config.loader import load_config
from gateway.daemon import Daemon
from gateway.outbox import OutboxClosed
from tests.daemon_harness import FIXTURES, replay_device, write_config


class SlowToStopUplink:
    """Takes half a second to finish once cancelled, as the real uplink does while it gives its
    leased rows back and says goodbye to the broker."""

    instances: ClassVar[list[SlowToStopUplink]] = []

    def __init__(self, *_args: Any, **_kw: Any) -> None:
        self.stats = SimpleNamespace(connected=False)
        self.cancelled = asyncio.Event()
        SlowToStopUplink.instances.append(self)

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            await asyncio.sleep(0.5)
            raise


async def test_cancelling_the_daemon_while_it_waits_for_the_uplink_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "Uplink", SlowToStopUplink)
    SlowToStopUplink.instances.clear()
    vitals = FIXTURES / "vitals" / "patient-a.jsonl"
    path = write_config(tmp_path, broker_url="mqtt://127.0.0.1:9",
                        patients={"p-a": [replay_device("ox-a", vitals=vitals, speed=5)]})
    d = Daemon(path, load_config(path))
    run = asyncio.create_task(d.run())
    async with asyncio.timeout(20):
        while not SlowToStopUplink.instances:  # noqa: ASYNC110 - waits for the daemon's start-up
            await asyncio.sleep(0.02)
        d.request_stop()
        await SlowToStopUplink.instances[0].cancelled.wait()  # the shutdown waits for the uplink now
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert run.cancelled()
    assert d.outbox is not None
    with pytest.raises(OutboxClosed):  # closed all the same on the way out
        await d.outbox.lease(1)


_NEVER_ENDS = """
import asyncio, sys
from gateway import {module}

async def never_ends(self):
    while True:  # takes every cancellation for something else, and carries on
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

{module}.{cls}.run = never_ends
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def stop_with_a_task_that_never_ends(tmp_path: Path, module: str, cls: str) -> tuple[dict[str, Any], float]:
    """The CLI daemon with ``module.cls.run`` ignoring every cancellation, stopped by SIGTERM once
    ready: its journal lines by event, and how long it took to exit (asserted: exit code 0)."""
    vitals = FIXTURES / "vitals" / "patient-a.jsonl"
    cfg = write_config(
        tmp_path, broker_url="mqtt://127.0.0.1:9", patients={"p-a": [replay_device("idle", vitals=vitals)]}
    )
    log = tmp_path / "daemon.log"
    script = _NEVER_ENDS.format(module=module, cls=cls)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, "run", "-c", str(cfg)],
            cwd=Path(__file__).resolve().parent.parent, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "gateway_ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    return {e["event"]: e for e in map(json.loads, re.findall(r"\{.*\}", log.read_text()))}, took


def test_an_uplink_that_never_ends_does_not_keep_a_stopping_daemon_alive(tmp_path: Path) -> None:
    """Seen once in CI: after SIGTERM the uplink task never ended, and the daemon's task group
    waited for it for good (no exit 30 s after SIGTERM; systemd would have killed it at
    TimeoutStopSec).  The daemon now says where the uplink waits, closes the outbox as always,
    and leaves with a clean exit once it has waited for it so long."""
    events, took = stop_with_a_task_that_never_ends(tmp_path, "uplink", "Uplink")
    assert "gateway_stopped" in events and "gateway_exit_forced" in events
    assert any("never_ends" in link for link in events["uplink_not_stopped"]["awaiting"])
    assert took < 10, took  # the unit's TimeoutStopSec


def test_a_device_session_that_never_ends_does_not_keep_a_stopping_daemon_alive(tmp_path: Path) -> None:
    """The sessions are tasks of their own: past their grace (``device_stop_timeout``) the
    daemon went on to a clean stop, and then asyncio.run waited for the session for good."""
    events, took = stop_with_a_task_that_never_ends(tmp_path, "supervisor", "DeviceSession")
    assert "device_stop_timeout" in events and "gateway_stopped" in events
    forced = events["gateway_exit_forced"]
    assert forced["reason"] == "device_not_stopped" and forced["tasks"] == ["device:idle"]
    assert any("never_ends" in link for link in forced["awaiting"])
    assert took < 10, took  # the unit's TimeoutStopSec
