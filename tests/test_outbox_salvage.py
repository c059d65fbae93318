"""A damaged outbox file costs the rows on its damaged pages, not every pending record.

Real SQLite files, damaged on disk the way a failing SD card does (bytes of one page overwritten),
then opened by the real outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway import keyring
from gateway.clock import PLAUSIBLE_EPOCH
from gateway.outbox import Outbox, PendingRow, schema
from gateway.outbox.keys import parse_seq
from tests.test_outbox import GW, billing, drain, moved_aside, open_box, summary
from tests.test_outbox_sealed import open_box as open_sealed
from tests.test_outbox_sealed import summary as sealed_summary


def _pages(path: Path, name: str) -> list[tuple[int, int]]:
    """``(page number, cells)`` of the leaf pages of table or index ``name``."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        return [
            (int(p), int(n))
            for p, n in c.execute(
                "SELECT pageno, ncell FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", (name,)
            )
        ]


def _root(path: Path, name: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        return int(c.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0])


def _scribble(path: Path, page: int) -> None:
    """64 bytes of 0xFF over the head of one page, in place."""
    with path.open("r+b") as f:
        f.seek(16)
        size = int.from_bytes(f.read(2), "big")
        f.seek((page - 1) * size)
        f.write(b"\xff" * 64)


def _by_key(rows: list[PendingRow]) -> dict[str, tuple[int, bytes]]:
    return {r.key: (r.seq, r.payload) for r in rows}


async def test_a_damaged_index_page_loses_no_pending_record(tmp_path: Path) -> None:
    """The audit's case: the delivered_at index's root page overwritten.  Every pending billing
    record comes back under its own key, and the delivered keys are still remembered."""
    path = tmp_path / "o.db"
    b = await open_box(path)
    await asyncio.gather(*(b.submit(billing(f"rpm:p1:99454:{i}")) for i in range(500)))
    sent = await b.lease(5)
    await b.ack([r.id for r in sent])
    pending = _by_key(await drain(b))
    await b.close()
    assert len(pending) == 495
    _scribble(path, _root(path, "delivered_at"))
    alarms: list[str] = []
    with capture_logs() as logs:
        b = await open_box(path, on_alarm=lambda c, d: alarms.append(d))
    assert moved_aside(tmp_path) and len(alarms) == 1 and "495 records salvaged, 0 lost" in alarms[0]
    (salvaged,) = [e for e in logs if e["event"] == "outbox_salvaged"]
    assert (salvaged["records"], salvaged["records_lost"], salvaged["delivered"]) == (495, 0, 5)
    assert not [e for e in logs if e["event"] == "outbox_rows_lost"]
    # a billing record re-emitted under a key already delivered is still a no-op
    await b.submit(billing(sent[0].key.removesuffix(":v1")))
    assert _by_key(await drain(b)) == pending  # same keys, same sequence numbers, same payloads
    await b.close()


async def test_a_damaged_table_page_loses_only_the_rows_on_it(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    b = await open_box(path)
    await asyncio.gather(*(b.submit(summary(b.next_key())) for _ in range(2000)))
    before = _by_key(await drain(b))
    await b.close()
    leaves = _pages(path, "outbox")
    assert len(leaves) > 10
    page, cells = leaves[len(leaves) // 2]
    _scribble(path, page)
    with capture_logs() as logs:
        b = await open_box(path, on_alarm=lambda c, d: None)
    after = _by_key(await drain(b))
    fresh = b.next_key()
    await b.close()
    assert len(after) == 2000 - cells and after.items() <= before.items()  # the survivors, unchanged
    (lost,) = [e for e in logs if e["event"] == "outbox_rows_lost"]
    assert lost["log_level"] == "error" and (lost["records"], lost["records_lost"]) == (2000 - cells, cells)
    # numbering goes on above every key of the damaged file: no key is used twice
    assert parse_seq(GW, fresh) > max(parse_seq(GW, k) or 0 for k in before)


async def test_damage_found_while_running_keeps_the_readable_rows(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    b = await open_box(path)
    await asyncio.gather(
        *(b.submit(summary(b.next_key()).model_copy(update={"devices": ["d" * 2000]})) for _ in range(3000))
    )  # far more than SQLite's page cache holds
    await b.close()
    leaves = _pages(path, "outbox")
    page, cells = leaves[len(leaves) // 2]
    b = await open_box(path, on_alarm=lambda c, d: None)
    (first,) = await b.lease(1)
    await asyncio.to_thread(_scribble, path, page)  # the card goes bad under the daemon
    rows = await drain(b)
    rows += await drain(b)  # the lease that found the damage is answered from the fresh file
    keys = {r.key for r in rows}
    assert first.key in keys  # a lease from the damaged file is sent again, under its own key
    assert len(keys) == 3000 - cells
    await b.close()
    assert Outbox.inspect(path).depth == 3000 - cells


async def test_sealed_rows_salvaged_into_the_new_file_still_open(tmp_path: Path) -> None:
    ring, _ = keyring.init(tmp_path / "keys" / "keyring")
    path = tmp_path / "outbox.sqlite3"
    b = await open_sealed(path, ring)
    for _ in range(20):
        await b.submit(sealed_summary(b.next_key()))
    before = _by_key(await b.lease(100))
    await b.close()
    _scribble(path, _root(path, "outbox_class_seq"))
    b = await open_sealed(path, ring, on_alarm=lambda c, d: None)
    assert next(tmp_path.glob("outbox.sqlite3.corrupt-*"))  # noqa: ASYNC240 - the test's own folder
    assert _by_key(await b.lease(100)) == before  # decrypted, same keys, same chain positions
    await b.close()


def test_quarantine_age_is_not_judged_by_an_unset_clock(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    before_ntp = tmp_path / "o.db.corrupt-19700101T000012Z"  # moved aside before NTP answered
    old = tmp_path / "o.db.corrupt-20260101T000000Z"
    for p in (before_ntp, old):
        p.write_bytes(b"x")
    os.utime(before_ntp, (12.0, 12.0))
    now = PLAUSIBLE_EPOCH + 90 * 86_400
    os.utime(old, (now - 40 * 86_400,) * 2)
    # the clock is not set yet: nothing is deleted, however old the files look
    assert schema.purge_quarantine(db, 30 * 86_400, 500.0) == []
    assert before_ntp.exists() and old.exists()
    # set: a file of plausible age goes; one stamped before the clock was set starts its age now
    assert schema.purge_quarantine(db, 30 * 86_400, now) == [old]
    assert before_ntp.exists() and before_ntp.stat().st_mtime == pytest.approx(now)
    assert schema.purge_quarantine(db, 30 * 86_400, now + 31 * 86_400) == [before_ntp]
    assert time.time() > PLAUSIBLE_EPOCH  # this machine's own clock is set (the tests above pass now)
