"""``iomt-gateway outbox --check``: every row opened with the keyring, read-only, on real SQLite files.

Damage is made the way it happens: bytes of a stored row changed (a failing card, an edit of the
file), two rows' blobs swapped, a state row altered, and — with the key, as only a holder of the
keyring could — one record replaced by another that authenticates but no longer links in the chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import keyring
from gateway.outbox import Outbox
from gateway.outbox.crypto import Sealer
from tests.test_outbox_sealed import GW, summary


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "outbox", "--check", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=dict(os.environ))


@pytest.fixture
async def sealed(tmp_path: Path) -> tuple[Path, Path]:
    ring_path = tmp_path / "keyring"
    ring, _ = keyring.init(ring_path)
    db = tmp_path / "outbox.sqlite3"
    box = await Outbox.open(db, gateway_id=GW, keyring=ring, commit_interval_ms=5)
    for _ in range(20):
        await box.accept(summary(box.next_key()))
    await box.submit_state({"billing/p1": b"books", "pipeline/p1": b"state"})
    await box.close()
    return db, ring_path


def _blob(db: Path, row_id: int) -> bytes:
    with sqlite3.connect(db) as conn:
        return bytes(conn.execute("SELECT payload FROM outbox WHERE id = ?", (row_id,)).fetchone()[0])


def _set_blob(db: Path, row_id: int, blob: bytes) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (blob, row_id))


def test_a_good_file_passes_and_the_check_writes_nothing(sealed: tuple[Path, Path]) -> None:
    db, ring = sealed
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    r = cli("--db", str(db), "--keyring", str(ring))
    assert r.returncode == 0, r.stderr
    assert "20 records, 2 state rows checked (0 in clear, not judged)" in r.stdout
    assert "every sealed row authenticates; the stored chain links up" in r.stdout
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_altered_and_swapped_rows_and_an_altered_state_row_are_each_named(sealed: tuple[Path, Path]) -> None:
    db, ring = sealed
    blob = bytearray(_blob(db, 5))
    blob[-20] ^= 0x01  # one bit of the ciphertext
    _set_blob(db, 5, bytes(blob))
    b9, b10 = _blob(db, 9), _blob(db, 10)  # each authenticates, but under the other row's identity
    _set_blob(db, 9, b10)
    _set_blob(db, 10, b9)
    with sqlite3.connect(db) as conn:
        (ident, value) = conn.execute("SELECT key, value FROM state WHERE key LIKE 'billing/%'").fetchone()
        conn.execute("UPDATE state SET value = ? WHERE key = ?", (bytes(value)[:-1] + b"\x00", ident))
    r = cli("--db", str(db), "--keyring", str(ring))
    assert r.returncode == 1
    assert "4 row(s) fail authentication" in r.stdout, r.stdout
    for row_id in (5, 9, 10):
        assert f"outbox row {row_id} (summary created 20" in r.stdout
    assert f"state row {ident}: " in r.stdout and "authentication failed (damaged or altered)" in r.stdout
    doc = json.loads(cli("--db", str(db), "--keyring", str(ring), "--json").stdout)
    assert not doc["ok"] and sorted(b["row"] for b in doc["bad"] if b["table"] == "outbox") == ["10", "5", "9"]


def test_a_record_replaced_with_the_key_authenticates_but_breaks_the_chain(sealed: tuple[Path, Path]) -> None:
    db, ring_path = sealed
    ring = keyring.load(ring_path)
    with sqlite3.connect(db) as conn:
        key, chain_n = conn.execute("SELECT key, chain_n FROM outbox WHERE id = 7").fetchone()
        meta = dict(conn.execute("SELECT name, value FROM meta"))
    forger = Sealer(ring)
    forger.adopt(meta.get)
    row = forger.open_record(key, _blob(db, 7))
    forged = row.payload.replace(b'"max":70.0', b'"max":180.0')
    assert forged != row.payload
    _, blob = forger.seal_record(key, row.patient, forged, row.prev, key)
    _set_blob(db, 7, blob)
    r = cli("--db", str(db), "--keyring", str(ring_path))
    assert r.returncode == 1
    assert "fail authentication" not in r.stdout  # the forgery authenticates...
    assert f"chain does not link between positions {chain_n}->{chain_n + 1}" in r.stdout  # ...but does not link


def test_another_keyring_is_refused_without_judging_rows(sealed: tuple[Path, Path], tmp_path: Path) -> None:
    db, _ = sealed
    keyring.init(tmp_path / "other")
    r = cli("--db", str(db), "--keyring", str(tmp_path / "other"))
    assert r.returncode == 2
    assert "wrong or incomplete keyring for this outbox" in r.stderr and "Traceback" not in r.stderr
