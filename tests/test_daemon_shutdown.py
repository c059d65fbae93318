"""The daemon's own shutdown path, in process: what happens when its task is cancelled meanwhile."""

from __future__ import annotations

import asyncio
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
