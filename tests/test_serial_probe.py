"""``serial-probe``: recognising a device's protocol from what it sends."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from drivers.serial.probe import main, probe, score
from gateway import plugins
from tests.serial_pty import FIX, Pty

CAPTURES = {
    "nonin2": "nonin2_patient-a_220s.bin",
    "nonin7": "nonin7_patient-a_220s.bin",
    "nonin8": "nonin8_patient-a.bin",
    "contec": "contec_patient-a_220s.bin",
    "masimo": "masimo_patient-a_100s.txt",
    "ecgstream": "ecgstream_mitdb119.bin",
}


@pytest.mark.parametrize("protocol", sorted(CAPTURES))
def test_each_capture_is_recognised_as_its_own_protocol_only(protocol: str) -> None:
    # Two seconds' worth, starting mid-stream as a probe would hear it.
    data = (FIX / CAPTURES[protocol]).read_bytes()
    start = 7 if protocol != "nonin8" else 402
    heard = data[start : start + 4000]
    matches = [r.protocol for r in score(heard, 9600, "8N1") if r.matches]
    assert matches == [protocol]


def test_garbage_matches_nothing() -> None:
    noise = bytes((k * 37 + 11) & 0xFF for k in range(3000))
    assert [r for r in score(noise, 9600, "8N1") if r.matches] == []


async def test_probe_a_live_port(tmp_path: Path) -> None:
    pty = Pty(tmp_path / "by-id" / "usb-unknown-device")
    data = (FIX / "contec_patient-a_220s.bin").read_bytes()

    async def talk() -> None:
        while pty.open:
            for i in range(0, len(data), 300):
                await pty.write(data[i : i + 300])
                await asyncio.sleep(0.02)

    task = asyncio.create_task(talk())
    try:
        results = await probe(str(pty.link), seconds=0.3)
    finally:
        pty.unplug()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    best = results[0]
    # A pty hears the same bytes at every rate: the protocol's own line setting wins the tie.
    assert (best.protocol, best.baud, best.format) == ("contec", 19200, "8O1")
    assert best.matches and not any(r.matches for r in results if r.protocol != "contec")


def test_cli_on_a_missing_port(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert plugins.load(plugins.COMMANDS_GROUP, "serial-probe") is main
    assert main([str(tmp_path / "nope"), "--seconds", "0.1"]) == 2
    assert "no such device" in capsys.readouterr().err
