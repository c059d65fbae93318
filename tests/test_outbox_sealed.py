"""The outbox with a keyring: sealed rows on disk, key errors that lose nothing, the record chain.

Real SQLite files throughout; the "copy off the card" is a byte search of the database file and
its -wal taken while the outbox is open.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import chain, checkpoint, keyring
from gateway.config.models import QuotaSection
from gateway.outbox import Outbox, OutboxKeyError, PendingRow
from gateway.outbox.crypto import Sealer
from gateway.records import (
    AlarmEvent,
    AlarmRecord,
    BillingRecord,
    BillingStatus,
    ClockQuality,
    RecordKind,
    Severity,
    SummaryRecord,
    Vital,
)
from gateway.uplink import checkpoint_topic, topic_for
from gateway.verify import Report, verify
from gateway.verify_cli import parse_capture

GW = "gw-sealed"
PSEUDONYM = "pz-quokka-4471"
DAY = datetime(2031, 7, 19, 8, 30, tzinfo=UTC)  # dates this test alone uses
ODD_VALUE = 61.8125  # and a value


def summary(key: str) -> SummaryRecord:
    return SummaryRecord(key=key, gateway_id=GW, patient=PSEUDONYM, time=DAY, clock=ClockQuality.SYNCED,
                         vital=Vital.HEART_RATE, unit="/min", period_start=DAY, period_end=DAY, count=60,
                         min=55.0, mean=ODD_VALUE, max=70.0, quality=0.97, devices=["ox-quokka"])


def alarm(key: str) -> AlarmRecord:
    return AlarmRecord(key=key, gateway_id=GW, patient=PSEUDONYM, time=DAY, clock=ClockQuality.SYNCED,
                       alarm_id="a1", event=AlarmEvent.RAISED, condition="spo2_low", technical=False,
                       severity=Severity.HIGH, vital=Vital.SPO2, value=84.5, threshold=88.0)


def billing() -> BillingRecord:
    service = f"rpm:{PSEUDONYM}:99454:2031-07-01"
    return BillingRecord(key=f"{service}:v1", gateway_id=GW, patient=PSEUDONYM, time=DAY,
                         clock=ClockQuality.SYNCED, service_key=service, version=1, code="99454",
                         status=BillingStatus.BILLABLE, period_start="2031-07-01", period_end="2031-07-30",
                         timezone="UTC", qualifying_days=16, dates=["2031-07-19"], devices=["ox-quokka"])


@pytest.fixture
def ring(tmp_path: Path) -> keyring.Keyring:
    r, created = keyring.init(tmp_path / "keys" / "keyring")
    assert created
    return r


async def open_box(path: Path, ring: keyring.Keyring | None, **kw: object) -> Outbox:
    kw.setdefault("commit_interval_ms", 5)
    kw.setdefault("free_bytes", lambda _folder: 10**12)
    return await Outbox.open(path, gateway_id=GW, keyring=ring, **kw)  # type: ignore[arg-type]


def capture(rows: list[PendingRow], notes: list[str]) -> list[tuple[str, bytes]]:
    msgs = [(topic_for("t", GW, r.kind, r.patient), r.payload) for r in rows]
    return msgs + [(checkpoint_topic("t", GW), n.encode()) for n in notes]


def verifier(ring: keyring.Keyring) -> checkpoint.Verifier:
    origin = checkpoint.origin_for(GW)
    return checkpoint.parse_verifier(checkpoint.verifier_key(origin, ring.public_key()))


def file_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ---- at rest --------------------------------------------------------------------------------


async def test_a_copy_of_the_database_holds_no_pseudonym_value_or_date_in_clear(
    tmp_path: Path, ring: keyring.Keyring
) -> None:
    db = tmp_path / "state" / "outbox.sqlite3"
    b = await open_box(db, ring)
    for _ in range(50):
        await b.accept(summary(b.next_key()))
    await b.accept(alarm(b.next_key()))
    await b.accept(billing(), state={f"billing/{PSEUDONYM}/book": b'{"first":"2031-07-19"}'})
    await b.submit_state({f"pipeline/{PSEUDONYM}": json.dumps({"mean": ODD_VALUE}).encode()})
    rows = await b.lease(20)
    await b.ack([r.id for r in rows])  # deleted rows: secure_delete zeroes them
    await b.accept(summary(b.next_key()))
    # the "card" is copied while the daemon runs: the main file and its write-ahead log
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(f"{db}{suffix}", copy / f"outbox.sqlite3{suffix}")
    assert (copy / "outbox.sqlite3-wal").stat().st_size > 0
    # what the same records look like in clear, so the search is known to look for real bytes
    plain = summary("x").model_dump_json().encode() + billing().model_dump_json().encode()
    needles = [PSEUDONYM.encode(), b"2031-07-19", b"2031-07-01", b"61.8125", b"ox-quokka", b"99454:2031"]
    assert all(n in plain for n in needles)
    for f in copy.iterdir():
        data = f.read_bytes()
        found = [n for n in needles if n in data]
        assert not found, f"{f.name} holds {found} in clear"
    for suffix in ("", "-wal", "-shm"):
        mode = stat.S_IMODE(os.stat(f"{db}{suffix}").st_mode)
        assert mode & 0o037 == 0, f"{db.name}{suffix} has mode {mode:o}"
    # ...and the outbox itself reads everything back
    await b.close()
    b = await open_box(db, ring)
    left = await b.lease(100)
    assert {r.kind for r in left} == {RecordKind.SUMMARY, RecordKind.BILLING, RecordKind.ALARM} - {
        r.kind for r in rows if r.kind is not RecordKind.SUMMARY}
    assert all(PSEUDONYM.encode() in r.payload for r in left)
    assert (await b.load_state("pipeline/")) == {f"pipeline/{PSEUDONYM}": json.dumps({"mean": ODD_VALUE}).encode()}
    assert Outbox.read_state(db, "billing/", keyring=ring) == {f"billing/{PSEUDONYM}/book": b'{"first":"2031-07-19"}'}
    await b.close()


async def test_a_wrong_or_missing_key_loses_nothing(tmp_path: Path, ring: keyring.Keyring) -> None:
    db = tmp_path / "state" / "outbox.sqlite3"
    b = await open_box(db, ring)
    keys = [b.next_key() for _ in range(30)]
    for k in keys:
        await b.accept(summary(k))
    await b.close()
    before = file_digest(db.parent)
    other, _ = keyring.init(tmp_path / "other-keyring")
    alarms: list[tuple[str, str]] = []
    for wrong in (other, None):
        with pytest.raises(OutboxKeyError, match="keyring"):
            await open_box(db, wrong, on_alarm=lambda c, d: alarms.append((c, d)))
        assert file_digest(db.parent) == before  # not moved aside, not rewritten, nothing deleted
    with pytest.raises(OutboxKeyError):
        Outbox.read_state(db, "billing/", keyring=other)
    b = await open_box(db, ring)
    assert sorted(r.key for r in await b.lease(100)) == sorted(keys)
    await b.close()


async def test_rotation_keeps_old_rows_readable_without_rewriting_them(tmp_path: Path, ring: keyring.Keyring) -> None:
    db = tmp_path / "outbox.sqlite3"
    b = await open_box(db, ring)
    old = [b.next_key() for _ in range(5)]
    for k in old:
        await b.accept(summary(k))
    await b.close()
    assert Outbox.key_ids(db) == [1]
    rotated = keyring.rotate(ring.source)
    assert rotated.current == 2 and rotated.aead[1] == ring.aead[1]
    b = await open_box(db, keyring.load(ring.source))
    new = b.next_key()
    await b.accept(summary(new))
    assert sorted(r.key for r in await b.lease(100)) == sorted([*old, new])
    await b.close()
    assert Outbox.key_ids(db) == [1, 2]
    with pytest.raises(OutboxKeyError, match=r"key id\(s\) \[2\]"):
        await open_box(db, ring)  # the keyring from before the rotation lacks key 2


async def test_damaged_files_moved_aside_are_purged_after_their_age(tmp_path: Path, ring: keyring.Keyring) -> None:
    db = tmp_path / "outbox.sqlite3"
    stale = tmp_path / "outbox.sqlite3.corrupt-20200101T000000Z"
    recent = tmp_path / "outbox.sqlite3.corrupt-20310101T000000Z"
    for p in (stale, recent):
        p.write_bytes(b"x")
    os.utime(stale, (time.time() - 40 * 86400,) * 2)
    b = await open_box(db, ring, quarantine_days=30)
    await b.close()
    assert not stale.exists() and recent.exists()


# ---- the chain ------------------------------------------------------------------------------


async def chained_capture(tmp_path: Path, ring: keyring.Keyring) -> tuple[list[tuple[str, bytes]], Outbox]:
    b = await open_box(tmp_path / "outbox.sqlite3", ring)
    notes: list[str] = []
    for i in range(12):
        fut = b.submit(alarm(b.next_key()) if i % 5 == 0 else summary(b.next_key()))
        if i == 4:
            fut2 = b.submit(billing())
            await fut2
        await fut
        note = b.checkpoint()
        assert note is not None
        notes.append(note)
    rows = await b.lease(100)
    return capture(rows, notes[-1:]), b


async def test_a_clean_capture_verifies_and_duplicates_are_fine(tmp_path: Path, ring: keyring.Keyring) -> None:
    msgs, b = await chained_capture(tmp_path, ring)
    await b.close()
    report = verify(msgs + msgs[:3], verifier(ring))
    assert report.ok, report.render()
    assert report.records == 16 and report.duplicates == 3 and report.intact_to == 13 == report.chain_size
    assert report.authenticated == 13 and not report.missing and not report.unverified
    # the same capture as JSON lines and as mosquitto_sub -F '%t\t%p' text (notes span lines)
    as_json = "\n".join(json.dumps({"topic": t, "payload": p.decode()}) for t, p in msgs)
    as_tsv = "\n".join(f"{t}\t{p.decode()}" for t, p in msgs)
    for text in (as_json, as_tsv):
        assert parse_capture(text) == msgs
    # the record a consumer sees is the stored JSON, chain member cut off
    canonical, n, prev = chain.split_payload(msgs[0][1])
    json.loads(canonical)
    assert 1 <= n <= 13 and len(prev) == 32


def _position(msg: tuple[str, bytes]) -> int:
    return chain.split_payload(msg[1])[1]


def _report(msgs: list[tuple[str, bytes]], ring: keyring.Keyring) -> Report:
    report = verify(msgs, verifier(ring))
    assert not report.ok
    return report


async def test_verify_reports_altered_removed_reordered_and_forged_records(
    tmp_path: Path, ring: keyring.Keyring
) -> None:
    msgs, b = await chained_capture(tmp_path, ring)
    await b.close()
    records = sorted((m for m in msgs if not m[0].endswith("/checkpoint")), key=_position)
    note = [m for m in msgs if m[0].endswith("/checkpoint")]
    # altered: one value changed, chain member kept
    altered = [(t, p.replace(b'"mean":61.8125', b'"mean":91.8125')) if _position((t, p)) == 5 else (t, p)
               for t, p in records]
    assert altered != records
    r = _report(altered + note, ring)
    assert any(v.startswith("position 5:") for v in r.violations), r.render()
    # removed
    r = _report([m for m in records if _position(m) != 7] + note, ring)
    assert r.missing == [[7, 7]], r.render()
    # reordered in the chain: two records swap their chain members
    three, four = records[2], records[3]
    c3, _, _ = chain.split_payload(three[1])
    c4, _, _ = chain.split_payload(four[1])
    _, n3, p3 = chain.split_payload(three[1])
    _, n4, p4 = chain.split_payload(four[1])
    swapped = [*records[:2], (three[0], chain.outbound(c3, n4, p4)), (four[0], chain.outbound(c4, n3, p3)),
               *records[4:]]
    r = _report(swapped + note, ring)
    assert any(v.startswith(("position 3:", "position 4:")) for v in r.violations), r.render()
    # forged: a record invented at a new position, and a checkpoint signed by another key
    last = records[-1]
    canonical, n, _ = chain.split_payload(last[1])
    forged_rec = (last[0], chain.outbound(canonical.replace(b"61.8125", b"12.5"), n + 1,
                                          chain.link(b"\x00" * 32, b"x")))
    other, _ = keyring.init(tmp_path / "other")
    fake_note = checkpoint.sign(checkpoint.origin_for(GW), n + 1, chain.link(b"\x00" * 32, b"x"),
                                other.signing_key(), checkpoint.origin_for(GW), ring.public_key())
    r = _report([*records, forged_rec, *note, (checkpoint_topic("t", GW), fake_note.encode())], ring)
    assert any("rejected" in v for v in r.violations), r.render()
    assert any(v.startswith(f"position {n}:") or v.startswith(f"position {n + 1}:") for v in r.violations)
    # an unchained record that claims to be from the gateway
    r = _report([*records, (last[0], canonical), *note], ring)
    assert any("no chain position" in v for v in r.violations)


async def test_records_dropped_by_quota_leave_a_chained_tombstone(tmp_path: Path, ring: keyring.Keyring) -> None:
    quotas = QuotaSection(summary=100)
    b = await open_box(tmp_path / "outbox.sqlite3", ring, quotas=quotas)
    for _ in range(130):
        b.submit(summary(b.next_key()))
    await b.accept(summary(b.next_key()))
    rows = await b.lease(1000)
    note = b.checkpoint()
    await b.close()
    assert note is not None
    tombs = [r for r in rows if r.kind is RecordKind.TOMBSTONE]
    assert tombs, "drops must leave a tombstone"
    body = json.loads(chain.split_payload(tombs[0].payload)[0])
    assert body["reason"] == "quota" and body["classes"] == {"summary": body["count"]}
    report = verify(capture(rows, [note]), verifier(ring))
    assert report.ok, report.render()
    assert report.dropped == 31 and report.intact_to == report.chain_size == 131 + len(tombs)
    # without the tombstone the same gap is "missing": lost or withheld
    bare = [r for r in rows if r.kind is not RecordKind.TOMBSTONE]
    report = verify(capture(bare, [note]), verifier(ring))
    assert not report.ok and report.missing


async def test_a_row_altered_on_disk_is_kept_back_with_an_alarm_and_the_rest_still_flows(
    tmp_path: Path, ring: keyring.Keyring
) -> None:
    db = tmp_path / "outbox.sqlite3"
    b = await open_box(db, ring)
    keys = [b.next_key() for _ in range(5)]
    for k in keys:
        await b.accept(summary(k))
    await b.close()
    conn = sqlite3.connect(db)
    (row_id, blob) = conn.execute("SELECT id, payload FROM outbox ORDER BY id LIMIT 1 OFFSET 2").fetchone()
    flipped = bytearray(blob)
    flipped[-20] ^= 0x01  # one bit of the ciphertext
    conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (bytes(flipped), row_id))
    # and a ciphertext moved onto another row's identity
    (other_id,) = conn.execute("SELECT id FROM outbox ORDER BY id LIMIT 1 OFFSET 3").fetchone()
    (first_blob,) = conn.execute("SELECT payload FROM outbox ORDER BY id LIMIT 1").fetchone()
    conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (first_blob, other_id))
    conn.commit()
    conn.close()
    alarms: list[tuple[str, str]] = []
    b = await open_box(db, ring, on_alarm=lambda c, d: alarms.append((c, d)))
    rows = await b.lease(100)
    assert sorted(r.key for r in rows) == sorted([keys[0], keys[1], keys[4]])
    assert [c for c, _ in alarms] == ["outbox_row_unreadable"]  # once per episode
    assert await b.lease(100) == []  # the two rows are kept back, not re-offered
    await b.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 5  # nothing deleted
    conn.close()


async def test_resubmitted_keys_are_no_ops_and_leave_no_hole_in_the_chain(
    tmp_path: Path, ring: keyring.Keyring
) -> None:
    # A commit mixing new keys with keys stored by an earlier commit: the plain INSERT meets a
    # stored key, the attempt is rolled back and only the new rows take chain positions.
    b = await open_box(tmp_path / "outbox.sqlite3", ring)
    first = [b.next_key() for _ in range(5)]
    for k in first:
        await b.submit(summary(k))
    again = [b.submit(summary(k)) for k in first[1:4]]
    fresh = [b.next_key() for _ in range(4)]
    futs = [b.submit(summary(k)) for k in fresh]
    for f in [*again, *futs]:
        await f  # accepted: a re-submission is a no-op success
    note = b.checkpoint()
    assert note is not None
    rows = await b.lease(100)
    await b.close()
    assert sorted(r.key for r in rows) == sorted(first + fresh)
    msgs = capture(rows, [note])
    assert sorted(_position(m) for m in msgs[:-1]) == list(range(1, 10))
    report = verify(msgs, verifier(ring))
    assert report.ok and report.intact_to == 9 == report.chain_size, report.render()
    assert Outbox.inspect(tmp_path / "outbox.sqlite3").accepted == 9


def test_row_format_is_the_documented_one(ring: keyring.Keyring) -> None:
    # Files written by earlier versions are looked up by these identities and opened by this
    # layout: the batch path must produce exactly the documented bytes.
    s = Sealer(ring)
    key = "rpm:pz-quokka-4471:99454:2031-07-01:v1"
    mac = hashlib.blake2b(key.encode(), key=ring.index, digest_size=18, person=b"iomt-outbox-id").digest()
    ident = s.ident(key)
    assert ident == "h:" + base64.b64encode(mac).decode()
    prev = bytes(range(32))
    blobs = s.seal_records([(ident, key, PSEUDONYM, b'{"a":1}', prev), (ident, key, PSEUDONYM, b"{}", None)])
    assert blobs[0][:4] == b"\xa5\x01" + ring.current.to_bytes(2, "big")
    assert blobs[0][4:16] != blobs[1][4:16]  # never one nonce twice
    plain = AESGCM(ring.aead[ring.current]).decrypt(
        blobs[0][4:16], blobs[0][16:], b"iomt-outbox/1\x00outbox\x00" + ident.encode())
    k, p = key.encode(), PSEUDONYM.encode()
    assert plain == b"\x01" + prev + len(k).to_bytes(2, "big") + k + len(p).to_bytes(2, "big") + p + b'{"a":1}'
    opened = s.open_record(ident, blobs[1])
    assert (opened.key, opened.patient, opened.payload, opened.prev) == (key, PSEUDONYM, b"{}", None)


def _damage_all_but_meta(path: Path) -> None:
    """Junk the b-tree headers of every page except the schema and the meta table's page."""
    with sqlite3.connect(path) as conn:
        keep = {1, conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()[0]}
    raw = bytearray(path.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    for p in range(len(raw) // page):
        if p + 1 not in keep:
            raw[p * page : p * page + 64] = b"\xa5" * 64
    path.write_bytes(bytes(raw))


async def test_a_file_damaged_at_start_continues_the_chain_and_its_lost_records_show_as_missing(
    tmp_path: Path, ring: keyring.Keyring
) -> None:
    path = tmp_path / "outbox.sqlite3"
    b = await open_box(path, ring)
    for i in range(30):
        await b.submit(summary(b.next_key()))
        if i == 9:
            first_note = b.checkpoint()
            assert first_note is not None
    sent = await b.lease(10)  # positions 1-10 reach the receiver; 11-30 are still on the card
    await b.ack([r.id for r in sent])
    await b.close()
    _damage_all_but_meta(path)
    alarms: list[str] = []
    b = await open_box(path, ring, on_alarm=lambda c, d: alarms.append(c))
    assert alarms == ["outbox_corrupt"]
    for _ in range(5):
        await b.submit(summary(b.next_key()))
    note = b.checkpoint()
    assert note is not None
    later = await b.lease(100)
    await b.close()
    assert sorted(_position(m) for m in capture(later, [])) == [31, 32, 33, 34, 35]
    report = verify(capture(sent + later, [first_note, note]), verifier(ring))
    # what stayed in the damaged file is reported as what it is: never delivered; nothing forged
    assert report.missing == [[11, 30]], report.render()
    assert report.violations == ["20 positions missing (lost or withheld)"], report.render()
    assert report.authenticated == 15 and report.chain_size == 35
    # the new file seals under a fresh nonce salt: the damaged one's counter could not be trusted
    salts = set()
    for db in (path, next(tmp_path.glob("outbox.sqlite3.corrupt-*[0-9Z]"))):  # noqa: ASYNC240 - own tmp folder
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            salts.add(json.loads(conn.execute("SELECT value FROM meta WHERE name = 'crypto'").fetchone()[0])["salt"])
    assert len(salts) == 2


async def test_billing_records_from_before_encryption_are_not_stored_twice(
    tmp_path: Path, ring: keyring.Keyring
) -> None:
    path = tmp_path / "outbox.sqlite3"
    b = await open_box(path, None)  # an outbox written in clear, as before the keyring existed
    await b.submit(billing())
    rows = await b.lease(10)
    await b.ack([r.id for r in rows])  # delivered: remembered by its clear key
    pending = billing().model_copy(update={"key": "rpm:pz-quokka-4471:99457:2031-07-01:v1"})
    await b.submit(pending)
    await b.close()
    b = await open_box(path, ring)  # the upgrade turns encryption on
    await b.submit(billing())  # the ledger re-sends both after the restart
    await b.submit(pending)
    rows = await b.lease(10)
    await b.close()
    assert [r.key for r in rows] == [pending.key]  # once, the row written in clear
    assert Outbox.inspect(path).accepted == 2
