"""``iomt-gateway status``: what the running daemon sees, read from the file it keeps in its state directory.

The end-to-end test runs the real daemon (child process, real Mosquitto) on an excerpt of the
patient-a fixture holding its desaturation, and reads the alarm through the real command line while it
is raised, then sees it cleared.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway import status_file
from tests.broker import MosquittoBroker, Subscriber
from tests.daemon_harness import FIXTURES, ROOT, replay_device, write_config


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def _excerpt(dst: Path, start: float, end: float) -> Path:
    """Lines of patient-a.jsonl with start <= t < end, times shifted to begin at 0."""
    out = []
    for line in (FIXTURES / "vitals" / "patient-a.jsonl").read_text().splitlines():
        obj = json.loads(line)
        if start <= obj.get("t", -1) < end:
            obj["t"] = round(obj["t"] - start, 3)
            out.append(json.dumps(obj))
    dst.write_text("\n".join(out) + "\n")
    return dst


async def _status_until(path: Path, predicate: Any, within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = status_file.read(path)
        except status_file.StatusUnavailable:
            pass
        else:
            if predicate(last):
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"status never matched within {within_s} s; last: {last}")


async def test_status_of_a_running_daemon_shows_the_raised_alarm(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber, daemon_factory: Any
) -> None:
    # SpO2 falls below 90 % from t=123 s to t=166 s of the recording; t=110..200 at 2x real time.
    vitals = _excerpt(tmp_path / "desat.jsonl", 110, 200)
    cfg = write_config(
        tmp_path, broker_url=broker.url, patients={"p-a": [replay_device("ox-a", vitals=vitals, speed=2)]}
    )
    d = daemon_factory(cfg)
    d.start()
    path = status_file.status_path(tmp_path / "state")
    doc = await _status_until(path, lambda s: s["alarms"], within_s=40)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the technician's group may read it

    text = _cli("status", "-c", str(cfg))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("gateway gw-test: up ")
    assert "devices: 1/1 running" in lines
    assert any(line.split()[:4] == ["ox-a", "p-a", "replay", "running"] for line in lines), lines
    alarm_line = next(line for line in lines if line.startswith("  p-a: spo2 low value "))
    assert "(limit 90) [high] for " in alarm_line and "device ox-a" in alarm_line, alarm_line
    assert "alarms: 1 active" in lines
    assert any(line.startswith("uplink: connected, ") for line in lines), lines
    assert any(line.startswith("outbox: ") for line in lines), lines

    as_json = _cli("status", "-c", str(cfg), "--json")
    assert as_json.returncode == 0, as_json.stderr
    shown = json.loads(as_json.stdout)
    (alarm,) = shown["alarms"]
    assert alarm["condition"] == "spo2_low" and alarm["patient"] == "p-a" and not alarm["technical"]
    assert alarm["value"] < 90 and alarm["threshold"] == 90 and alarm["severity"] == "high"
    assert alarm["alarm_id"] == doc["alarms"][0]["alarm_id"]
    assert shown["uplink"]["connected"] is True
    assert {"alarm", "billing", "summary", "status"} <= set(shown["outbox"]["classes"])

    # The same alarm is the one the broker received as raised; once cleared, the status drops it.
    await subscriber.wait_until(lambda rs: any(alarm["alarm_id"] in r.payload.decode() for r in rs), within_s=20)
    cleared = await _status_until(path, lambda s: not s["alarms"], within_s=40)
    assert cleared["written_at"] > doc["written_at"]
    assert d.stop() == 0


def test_status_without_a_daemon_says_so(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, broker_url="mqtt://127.0.0.1:1", patients={"p": [replay_device("d", vitals="a")]})
    out = _cli("status", "-c", str(cfg))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == (
        f"iomt-gateway status: no status file at {tmp_path / 'state' / 'status.json'}: is the daemon running? "
        "(systemctl status iomt-gateway)"
    )


def test_a_stale_status_is_shown_with_a_warning_and_exit_1(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, broker_url="mqtt://127.0.0.1:1", patients={"p": [replay_device("d", vitals="a")]})
    (tmp_path / "state").mkdir()
    doc = status_file.build(
        gateway_id="gw-test",
        now=time.time() - 600,
        mono_now=0.0,
        started_at=time.time() - 4000,
        sessions=[],
        alarms=status_file.ActiveAlarms(),
        uplink=None,
        outbox=None,
    )
    status_file.write(status_file.status_path(tmp_path / "state"), doc)
    out = _cli("status", "-c", str(cfg))
    assert out.returncode == 1
    assert out.stdout.startswith("gateway gw-test: up 67 min, status written 10 min ago")
    assert "the daemon is not running or is stuck" in out.stderr


def test_a_damaged_status_file_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, broker_url="mqtt://127.0.0.1:1", patients={"p": [replay_device("d", vitals="a")]})
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "status.json").write_text('{"schema": 1, "writ')
    out = _cli("status", "-c", str(cfg))
    assert out.returncode == 1 and "is not a status file (not JSON)" in out.stderr and "Traceback" not in out.stderr
