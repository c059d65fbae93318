"""The keyring on the command line, and the daemon with a missing or wrong key (real processes)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway import checkpoint, keyring
from gateway.outbox import Outbox
from gateway.records import ClockQuality, SummaryRecord, Vital
from gateway.uplink import checkpoint_topic, topic_for
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


async def test_signing_key_rotation_co_signs_through_the_grace_time_and_verify_takes_both_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keyring"
    assert cli("keys", "init", "--keyring", str(path)).returncode == 0
    gw, when = "hub-7", datetime(2031, 1, 1, tzinfo=UTC)
    old_pub = cli("keys", "export", "--keyring", str(path), "--gateway-id", gw).stdout.strip()

    async def chained(n: int) -> list[tuple[str, bytes]]:
        """``n`` records through an outbox under the keyring as it is now, and its checkpoint."""
        box = await Outbox.open(tmp_path / "outbox.sqlite3", gateway_id=gw, keyring=keyring.load(path))
        for _ in range(n):
            await box.submit(SummaryRecord(
                key=box.next_key(), gateway_id=gw, patient="p1", time=when, clock=ClockQuality.SYNCED,
                vital=Vital.HEART_RATE, unit="/min", period_start=when, period_end=when, count=1,
                min=60.0, mean=60.0, max=60.0, quality=1.0, devices=["d"]))
        note = box.checkpoint()
        rows = await box.lease(1000)
        await box.ack([r.id for r in rows])
        await box.close()
        assert note is not None
        return [(topic_for("t", gw, r.kind, r.patient), r.payload) for r in rows] + [
            (checkpoint_topic("t", gw), note.encode())]

    before = await chained(3)
    rot = cli("keys", "rotate-signing", "--keyring", str(path), "--grace-days", "30")
    assert rot.returncode == 0 and "co-signs checkpoints until" in rot.stdout, rot.stderr
    new_pub = cli("keys", "export", "--keyring", str(path), "--gateway-id", gw).stdout.strip()
    status = json.loads(cli("keys", "status", "--keyring", str(path), "--gateway-id", gw).stdout)
    assert new_pub != old_pub and status["verifier_key"] == new_pub and status["previous_verifier_key"] == old_pub
    during = await chained(2)
    note = during[-1][1].decode()
    # the grace time's checkpoints open with either key: receivers not yet re-enrolled keep verifying
    for pub in (old_pub, new_pub):
        assert checkpoint.open_note(note, checkpoint.parse_verifier(pub)).size == 5
    assert cli("keys", "rotate-signing", "--keyring", str(path), "--grace-days", "0").returncode == 0
    newest_pub = cli("keys", "export", "--keyring", str(path), "--gateway-id", gw).stdout.strip()
    after = await chained(2)
    with pytest.raises(checkpoint.BadCheckpoint, match="no signature"):
        checkpoint.open_note(after[-1][1].decode(), checkpoint.parse_verifier(new_pub))  # grace 0: no co-sign
    capture = tmp_path / "capture.tsv"
    capture.write_text("".join(f"{t}\t{p.decode()}\n" for t, p in before + during + after))
    keys_file = tmp_path / "keys.pub"
    keys_file.write_text(f"{old_pub}\n{new_pub}\n")
    both = cli("verify", "--key", str(keys_file), "--key", newest_pub, str(capture))
    assert both.returncode == 0, both.stdout + both.stderr
    assert "7 positions authenticated" in both.stdout
    # with the first key alone, the checkpoint after the second rotation is not accepted
    only_old = cli("verify", "--key", old_pub, str(capture))
    assert only_old.returncode == 1 and "no signature by" in only_old.stdout


def test_prune_drops_the_previous_signing_key_only_after_its_grace_time(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    assert cli("keys", "init", "--keyring", str(path)).returncode == 0
    first = keyring.load(path)
    keyring.rotate_signing(path, 3600.0, time.time())  # an hour of co-signing
    kept = cli("keys", "prune", "--keyring", str(path))
    assert kept.returncode == 0 and "co-signs until" in kept.stdout and "kept" in kept.stdout
    assert keyring.load(path).previous_signing is not None
    # the same keyring an hour and a minute later (the grace time as written in the file, moved back)
    raw = json.loads(path.read_text())
    raw["signing_previous"]["until"] = time.time() - 60
    path.write_text(json.dumps(raw))
    status = json.loads(cli("keys", "status", "--keyring", str(path), "--gateway-id", "gw").stdout)
    assert "keys prune" in status["hint"]
    before = keyring.load(path)
    pruned = cli("keys", "prune", "--keyring", str(path))
    assert pruned.returncode == 0 and "dropped the previous signing key" in pruned.stdout
    after = keyring.load(path)
    assert after.previous_signing is None
    # everything else is as it was: the row keys, the current signing key
    assert (after.aead, after.index, after.signing_seed) == (before.aead, before.index, before.signing_seed)
    assert first.signing_seed != after.signing_seed
    assert base64.b64encode(first.signing_seed).decode() not in path.read_text()  # the retired seed is gone
    assert "hint" not in json.loads(cli("keys", "status", "--keyring", str(path)).stdout)
    again = cli("keys", "prune", "--keyring", str(path))
    assert again.returncode == 0 and "nothing to drop" in again.stdout
