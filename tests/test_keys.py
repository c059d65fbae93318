"""The keyring on the command line, and the daemon with a missing or wrong key (real processes)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway import checkpoint, keyring
from gateway.outbox import Outbox
from tests.daemon_harness import FIXTURES, replay_device, write_config


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, **(env or {})})


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_init_never_overwrites_and_rotate_status_export_work(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "keyring"
    first = cli("keys", "init", "--keyring", str(path))
    assert first.returncode == 0 and first.stdout.startswith(f"created {path}"), first.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    original = path.read_bytes()
    again = cli("keys", "init", "--keyring", str(path))
    assert again.returncode == 0 and "exists, left unchanged" in again.stdout
    assert path.read_bytes() == original
    rot = cli("keys", "rotate", "--keyring", str(path))
    assert rot.returncode == 0 and "key id 2" in rot.stdout, rot.stderr
    status = json.loads(cli("keys", "status", "--keyring", str(path), "--gateway-id", "hub-7").stdout)
    assert status["key_ids"] == [1, 2] and status["current"] == 2 and status["source"] == "file"
    assert not status["permissions_loose"]
    ring = keyring.load(path)
    assert ring.aead[1] == keyring.parse(original.decode(), path).aead[1]  # old key kept for reading
    exported = cli("keys", "export", "--keyring", str(path), "--gateway-id", "hub-7")
    assert exported.returncode == 0
    v = checkpoint.parse_verifier(exported.stdout)
    assert exported.stdout.strip() == status["verifier_key"] and v.name == "iomt-gateway/hub-7"
    note = checkpoint.sign(v.name, 3, b"\x01" * 32, ring.signing_key(), v.name, ring.public_key())
    assert checkpoint.open_note(note, v).size == 3
    assert "AEAD" not in exported.stdout + json.dumps(status) and ring.index.hex() not in json.dumps(status)


def test_a_systemd_credential_takes_precedence_and_is_read_only(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    keyring.init(creds / keyring.CREDENTIAL_NAME)
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    status = json.loads(cli("keys", "status", env=env).stdout)
    assert status["keyring"] == str(creds / keyring.CREDENTIAL_NAME) and status["source"] == "systemd credential"
    out = cli("keys", "rotate", env=env)
    assert out.returncode == 1 and "systemd credential (read-only)" in out.stderr


def test_a_missing_keyring_is_named_with_the_command_that_makes_it(tmp_path: Path) -> None:
    out = cli("keys", "status", "--keyring", str(tmp_path / "nope"))
    assert out.returncode == 1
    assert f"no keyring at {tmp_path / 'nope'}" in out.stderr and "keys init" in out.stderr


async def test_the_daemon_refuses_a_wrong_or_missing_key_and_loses_nothing(
    tmp_path: Path, daemon_factory: Any
) -> None:
    cfg = write_config(
        tmp_path,
        broker_url="mqtt://127.0.0.1:9",  # offline: everything stays in the outbox
        patients={"p-a": [replay_device("ox-a", vitals=FIXTURES / "vitals" / "patient-a.jsonl", speed=600)]},
        extra={"processing": {"summaries": {"period_s": 1}}},
    )
    db = tmp_path / "state" / "outbox.sqlite3"
    d = daemon_factory(cfg)
    d.start()
    deadline = time.monotonic() + 60
    while Outbox.inspect(db).accepted < 20:  # polling another process's database
        assert time.monotonic() < deadline, d.log_tail()
        await asyncio.sleep(0.1)
    d.signal(signal.SIGTERM)
    d.proc.wait(timeout=10)  # type: ignore[union-attr]
    stored = Outbox.inspect(db).depth
    before = digest(db.parent)
    ring_path = tmp_path / "keyring"
    good = ring_path.read_bytes()
    ring_path.unlink()
    keyring.init(ring_path)  # someone "fixed" the missing key by making a new one
    out = await asyncio.to_thread(cli, "run", "-c", str(cfg))
    assert out.returncode == 2, out.stderr
    assert "refusing to start" in out.stderr and "different keyring" in out.stderr
    # logs go to stderr as JSON lines behind a syslog priority prefix (<2> = critical)
    events = [json.loads(line[line.index("{"):]) for line in out.stderr.splitlines() if line.startswith("<")]
    alarm = [e for e in events if e.get("event") == "gateway_technical_alarm"]
    assert alarm and alarm[0]["condition"] == "outbox_key" and alarm[0]["level"] == "critical"
    ring_path.unlink()
    out = await asyncio.to_thread(cli, "run", "-c", str(cfg))
    assert out.returncode == 2 and "no keyring at" in out.stderr
    assert digest(db.parent) == before  # nothing moved aside, rewritten or deleted
    ring_path.write_bytes(good)
    ring_path.chmod(0o600)
    box = await Outbox.open(db, gateway_id="gw-test", keyring=keyring.load(ring_path))
    rows = await box.lease(100_000)
    await box.close()
    assert len(rows) == stored and all(b'"p-a"' in r.payload for r in rows if r.patient == "p-a")
    # the billing view reads the sealed state with the same keyring
    billing = await asyncio.to_thread(cli, "billing", "-c", str(cfg), "--json")
    assert billing.returncode == 0, billing.stderr
    assert json.loads(billing.stdout.splitlines()[0])["patient"] == "p-a"
