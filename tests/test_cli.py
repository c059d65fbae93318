"""The command line as a technician uses it: the demo (README command one), `outbox`, `decode` dispatch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.local_broker import find_mosquitto

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
def test_demo_shows_readings_alarms_billing_and_delivery(tmp_path: Path) -> None:
    # 300 s recordings at 40x: the desaturation (t=120-170 s) and the sensor-off spell happen within 8 s.
    out = _cli("demo", "--duration", "9", "--speed", "40", "--state", str(tmp_path))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Started a private Mosquitto" in text
    assert "SpO2" in text and "HR(ECG)" in text
    assert "ALARM RAISED: spo2 low" in text and "ALARM CLEARED: spo2 low" in text
    assert "TECH ALARM RAISED: sensor off" in text
    assert "BILLING 99453" in text
    assert "broker connected" in text
    # The bedside patient (vfdb 424: VF at 59 s, asystole at 171 s) within 9 s at 40x: lethal-rhythm
    # alarms, each followed by its evidence strip, which the evidence command finds afterwards.
    for condition in ("ventricular fibrillation", "asystole"):
        assert f"ALARM RAISED: {condition} [high]" in text
        assert f"EVIDENCE {condition}: " in text
    vf_id = text.split("EVIDENCE ventricular fibrillation: ", 1)[1].split("(alarm ", 1)[1].split(")", 1)[0]
    config = tmp_path / "demo-config.yaml"
    assert f"-c {config}" in text
    listed = _cli("evidence", "--list", "-c", str(config))
    assert listed.returncode == 0, listed.stderr
    assert vf_id in listed.stdout.splitlines()
    delivered = int(text.rsplit("delivered to the broker this run (PUBACK): ", 1)[1].split(",")[0])
    assert delivered > 20
    assert "Traceback" not in text + out.stderr


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
def test_ctrl_c_stops_the_demo_with_everything_delivered(tmp_path: Path) -> None:
    # Ctrl-C in a terminal signals the whole foreground process group: the demo's own broker must
    # outlive the gateway, which delivers what it flushes on the way out (it died first, once).
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--speed", "40", "--state", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        process_group=0,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if "broker connected | records accepted" in line and "delivered 0 " not in line:
                break
        os.killpg(proc.pid, signal.SIGINT)
        text = proc.stdout.read()
        assert proc.wait(60) == 0, text
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "uplink_disconnected" not in text, text
    accepted, delivered = (int(w) for w in text.rsplit("  accepted ", 1)[1].split(", refused")[0].split(", delivered "))
    assert accepted == delivered > 0, text
    assert "Traceback" not in text


def test_demo_offline_fills_the_outbox(tmp_path: Path) -> None:
    out = _cli("demo", "--duration", "4", "--speed", "40", "--offline", "--state", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "broker offline" in out.stdout
    db = tmp_path / "gateway" / "outbox.sqlite3"
    shown = _cli("outbox", "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    summary = next(line for line in shown.stdout.splitlines() if line.strip().startswith("summary"))
    assert int(summary.split()[1]) > 0, shown.stdout
    as_json = _cli("outbox", "--db", str(db), "--json")
    assert '"delivered": 0' in as_json.stdout


def test_outbox_command_without_a_database_says_so(tmp_path: Path) -> None:
    out = _cli("outbox", "--db", str(tmp_path / "none.sqlite3"))
    assert out.returncode == 1 and "no outbox database" in out.stderr


def test_decode_dispatches_to_the_driver_packages() -> None:
    out = _cli("decode", "ble-heart-rate", "1E 55 32 00 21 00")
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    decoded = json.loads(line)["decoded"]
    assert (decoded["heart_rate"], decoded["energy_expended_kj"], decoded["rr_intervals_1024"]) == (85, 50, [33])
    unknown = _cli("decode", "no-such-protocol")
    assert unknown.returncode == 2 and "known:" in unknown.stderr and "nonin2" in unknown.stderr
