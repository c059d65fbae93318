"""End to end: a VF recording through the real daemon (child process) to a real Mosquitto: the
alarm and its evidence strip are published, and the gateway's sealed copy of the strip is found
by ``iomt-gateway evidence``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import evidence_codec
from gateway.evidence_cli import evidence_main
from gateway.outbox import Outbox
from tests.broker import Subscriber
from tests.daemon_harness import FIXTURES, replay_device, write_config


async def _published(sub: Subscriber, kind: str, within_s: float = 60.0) -> list[Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = [r.json() for r in sub.records() if r.json().get("kind") == kind]
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {kind} record published within {within_s} s")


async def test_vf_alarm_and_its_strip_reach_the_broker_and_the_cli(
    tmp_path: Path, broker: Any, subscriber: Subscriber, daemon_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(
        tmp_path,
        broker_url=f"mqtt://127.0.0.1:{broker.port}",
        patients={"p-a": [replay_device("ecg-a", ecg=FIXTURES / "ecg_vf" / "vfdb_426_615s", speed=0)]},
    )
    d = daemon_factory(cfg)
    d.start()
    strips = await _published(subscriber, "evidence")
    alarms = [
        r.json()
        for r in subscriber.records()
        if r.json().get("kind") == "alarm" and r.json()["condition"] == "ventricular_fibrillation"
    ]
    assert d.stop() == 0
    assert alarms and alarms[0]["event"] == "raised"
    (strip,) = [s for s in strips if s["alarm_id"] == alarms[0]["alarm_id"]]
    assert strip["device"] == "ecg-a" and strip["unit"] == "mV"
    samples = evidence_codec.decode(strip["data"], strip["sample_format"], strip["n_samples"])
    # From 2 s before the VF's onset (about 8 s before the raise) to 4 s after the raise.
    fs = strip["sample_rate_hz"]
    assert len(samples) == strip["n_samples"] > round(12 * fs)
    assert strip["onset_index"] == round(2 * fs) and strip["n_samples"] - strip["raise_index"] == round(4 * fs)
    assert Outbox.key_ids(tmp_path / "state" / "outbox.sqlite3")  # the outbox (and the kept copy) is sealed
    # The CLI reads the sealed copy with the daemon's keyring, as an operator would after delivery.
    assert evidence_main(["--list", "-c", str(cfg)]) == 0
    assert alarms[0]["alarm_id"] in capsys.readouterr().out.splitlines()
