"""Outbox file format across versions: a rollback keeps every pending record; a file a version
truly cannot read is refused with both versions named, and left exactly as it was."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import __version__
from gateway.outbox import Outbox, OutboxTooNew, schema
from tests.daemon_harness import FIXTURES, ROOT, replay_device, write_config
from tests.test_outbox import GW, alarm, billing, drain, keys_of, open_box, summary

NEXT = schema.LATEST + 1  # the format a next version would write


def _next_additive(conn: sqlite3.Connection) -> None:
    # What a next version might add: a nullable column an older reader never looks at.
    conn.execute("ALTER TABLE outbox ADD COLUMN trace TEXT")


def _digest(folder: Path) -> dict[str, str]:
    """The outbox files (and any moved-aside copy); other state files may come and go."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name.startswith(("o.db", "outbox.sqlite3"))}


def _meta(path: Path, name: str) -> str | None:
    row = sqlite3.connect(path).execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


async def test_new_file_records_its_format_minimum_reader_and_writer(tmp_path: Path) -> None:
    b = await open_box(tmp_path / "o.db")
    await b.close()
    assert sqlite3.connect(tmp_path / "o.db").execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    assert _meta(tmp_path / "o.db", "min_reader_format") == str(schema.MIN_READER[schema.LATEST])
    assert _meta(tmp_path / "o.db", "written_by") == __version__


async def test_upgrade_then_rollback_keeps_every_pending_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o.db"
    b = await open_box(path)  # this version
    before = [summary(b.next_key()), alarm(b.next_key()), billing("rpm:p1:99454:2026-03-01")]
    for r in before:
        await b.accept(r)
    await b.close()

    with monkeypatch.context() as m:  # upgrade: the next version migrates the file and adds records
        m.setattr(schema, "MIGRATIONS", {**schema.MIGRATIONS, NEXT: _next_additive})
        m.setattr(schema, "LATEST", NEXT)
        m.setattr(schema, "MIN_READER", {**schema.MIN_READER, NEXT: schema.MIN_READER[NEXT - 1]})
        m.setattr(schema, "__version__", "9.9.0")
        b = await open_box(path)
        during = summary(b.next_key())
        await b.accept(during)
        await b.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == NEXT

    b = await open_box(path)  # rollback: this version again, on the format-2 file
    after = summary(b.next_key())
    await b.accept(after)
    rows = await drain(b)
    assert sorted(keys_of(rows)) == sorted(r.key for r in [*before, during, after])
    await b.ack([r.id for r in rows])
    await b.close()
    # The rollback neither downgraded the file nor claimed it: the newer writer stays named.
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == NEXT
    assert _meta(path, "written_by") == "9.9.0"
    assert not list(tmp_path.glob("*.corrupt-*"))  # noqa: ASYNC240 (a test's own tmp folder)


def _too_new_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    schema.MIGRATIONS[1](conn)
    conn.execute("INSERT INTO meta(name, value) VALUES ('min_reader_format', '7'), ('written_by', '3.0.0')")
    conn.execute(
        "INSERT INTO outbox(kind, key, patient, seq, created, payload) VALUES ('billing', 'k1', 'p1', 1, 0, x'00')"
    )
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()


async def test_file_this_version_cannot_read_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    _too_new_file(path)
    before = _digest(tmp_path)
    alarms: list[str] = []
    with pytest.raises(OutboxTooNew) as err:
        await Outbox.open(path, gateway_id=GW, on_alarm=lambda c, _d: alarms.append(c))
    msg = str(err.value)
    assert "3.0.0" in msg and f"iomt-gateway {__version__}" in msg
    assert "format 7" in msg and f"up to {schema.LATEST}" in msg
    assert alarms == [], "a newer file is not damage"
    assert _digest(tmp_path) == before, "nothing moved aside, nothing rewritten"


def test_daemon_refuses_a_too_new_outbox_with_exit_2(tmp_path: Path) -> None:
    vitals = FIXTURES / "vitals" / "patient-a.jsonl"
    cfg = write_config(tmp_path, broker_url="mqtt://127.0.0.1:9",
                       patients={"p-a": [replay_device("dev-a", vitals=vitals)]})
    (tmp_path / "state").mkdir()
    _too_new_file(tmp_path / "state" / "outbox.sqlite3")
    before = _digest(tmp_path / "state")
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "-c", str(cfg)], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "written by iomt-gateway 3.0.0" in proc.stderr and f"this is iomt-gateway {__version__}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert _digest(tmp_path / "state") == before
