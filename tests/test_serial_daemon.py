"""A serial oximeter in the real daemon (child process, real Mosquitto): unplug, retries, replug on the
same by-id name; the other patient's device goes on undisturbed throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.broker import MosquittoBroker, Received, Subscriber
from tests.daemon_harness import FIXTURES, DaemonProcess, events_named, replay_device, write_config
from tests.serial_pty import FIX, Pty


async def keep_talking(pty: Pty, data: bytes) -> None:
    """A Nonin #2 at 10x its real rate until unplugged."""
    while pty.open:
        for i in range(0, len(data), 375):
            if not pty.open:
                return
            await pty.write(data[i : i + 375])
            await asyncio.sleep(0.1)


def status_of(records: list[Received], device: str) -> list[str]:
    return [b["state"] for b in (r.json() for r in records) if b["kind"] == "status" and b.get("device") == device]


def summaries_after(records: list[Received], device: str, t: float) -> list[dict[str, Any]]:
    bodies = (r.json() for r in records)
    return [
        b
        for b in bodies
        if b["kind"] == "summary" and device in b["devices"] and datetime.fromisoformat(b["period_end"]).timestamp() > t
    ]


async def test_daemon_survives_an_unplug_and_takes_the_device_back(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber
) -> None:
    link = tmp_path / "dev" / "serial" / "by-id" / "usb-Nonin_Medical_Inc._Xpod-if00-port0"
    data = (FIX / "nonin2_patient-a_220s.bin").read_bytes()
    pty = Pty(link)
    feeders = [asyncio.create_task(keep_talking(pty, data))]
    cfg = write_config(
        tmp_path,
        broker_url=broker.url,
        patients={
            "p-a": [{"id": "ox-serial", "driver": "nonin2", "port": str(link)}],
            "p-b": [replay_device("ox-b", vitals=FIXTURES / "vitals" / "patient-b.jsonl", speed=5, loop=True)],
        },
        extra={"processing": {"summaries": {"period_s": 2}}},
    )
    d = DaemonProcess(cfg, tmp_path)
    try:
        d.start()
        recs = subscriber.records
        await subscriber.wait_until(lambda _: status_of(recs(), "ox-serial")[:1] == ["connected"], 30)
        await subscriber.wait_until(lambda _: len(summaries_after(recs(), "ox-serial", 0)) >= 2, 30)

        pty.unplug()
        unplugged_at = time.time()
        await subscriber.wait_until(lambda _: "disconnected" in status_of(recs(), "ox-serial"), 30)
        # While the oximeter is away, the other patient's device keeps producing summaries.
        await subscriber.wait_until(lambda _: len(summaries_after(recs(), "ox-b", unplugged_at + 1)) >= 2, 30)
        assert "disconnected" not in status_of(recs(), "ox-b")

        pty = Pty(link)  # plugged back in: a new tty node behind the same by-id name
        feeders.append(asyncio.create_task(keep_talking(pty, data)))
        replugged_at = time.time()
        await subscriber.wait_until(lambda _: status_of(recs(), "ox-serial").count("connected") >= 2, 60)
        await subscriber.wait_until(lambda _: len(summaries_after(recs(), "ox-serial", replugged_at + 1)) >= 1, 30)
        assert d.stop() == 0
    finally:
        d.close()
        pty.unplug()
        for f in feeders:
            f.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await f
    events = d.log_events()
    retries = [e for e in events_named(events, "device_retry") if e.get("device") == "ox-serial"]
    errors = [e["error"] for e in retries]
    assert errors[0].startswith("DriverDisconnected: ")
    assert errors[0].endswith("hung up (unplugged, or its other end closed)")  # EOF or EIO alike
    assert all(e.startswith("DriverConnectFailed") and "no such device" in e for e in errors[1:])
    assert not [e for e in events_named(events, "device_retry") if e.get("device") == "ox-b"]


async def test_a_desaturation_on_a_real_nonin_stream_raises_spo2_low_with_its_pleth_strip(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber
) -> None:
    """The pleth evidence path from the wire: Nonin #2 bytes on a pty, at the device's own rate
    (75 frames/s), through the driver, the pipeline and the outbox to the broker."""
    from drivers.serial import simulate  # noqa: PLC0415
    from gateway import evidence_codec  # noqa: PLC0415

    # 4 s normal, then below the 90 % limit long enough for its 10 s minimum and the strip's 4 s after
    seconds = [simulate.OxiSecond(97, 72)] * 4 + [simulate.OxiSecond(84, 110)] * 26
    data = simulate.nonin75_stream(seconds, fmt=2)
    link = tmp_path / "dev" / "serial" / "by-id" / "usb-Nonin_Medical_Inc._Xpod-if00-port0"
    pty = Pty(link)
    per_s = len(data) // len(seconds)  # 75 frames x 5 bytes
    # a tenth of a second at a time, as a UART delivers it
    feeder = asyncio.create_task(pty.feed(data, per_s // 10, 0.1))
    cfg = write_config(tmp_path, broker_url=broker.url,
                       patients={"p-a": [{"id": "ox-serial", "driver": "nonin2", "port": str(link)}]})
    d = DaemonProcess(cfg, tmp_path)

    def bodies(kind: str) -> list[dict[str, Any]]:
        return [b for b in (r.json() for r in subscriber.records()) if b["kind"] == kind]

    try:
        d.start()
        await subscriber.wait_until(lambda _: bool(bodies("evidence")), 90)
        assert d.stop() == 0
    finally:
        d.close()
        pty.unplug()
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
    (raised,) = [a for a in bodies("alarm") if a["condition"] == "spo2_low" and a["event"] == "raised"]
    (strip,) = bodies("evidence")
    assert strip["alarm_id"] == raised["alarm_id"] and strip["device"] == "ox-serial"
    assert (strip["channel"], strip["sample_rate_hz"], strip["unit"]) == ("pleth", 75.0, "1")
    values = evidence_codec.decode(strip["data"], strip["sample_format"], strip["n_samples"])
    assert len(values) == strip["n_samples"] and 0 < strip["raise_index"] < strip["n_samples"]
    # the simulator's pulse wave (0..1 scaled to the 8-bit pleth byte): a real pulsatile waveform,
    # one upstroke per beat — at 110/min about 1.8 per second of strip
    assert values.min() >= 0 and values.max() <= 255 and values.max() - values.min() > 100
    upstrokes = int(((values[:-1] < 128) & (values[1:] >= 128)).sum())
    assert abs(upstrokes / (strip["n_samples"] / 75.0) - 110 / 60) < 0.5, upstrokes
