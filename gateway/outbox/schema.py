"""The outbox database file: schema, migrations, opening with corruption recovery.

Only this package speaks SQL.  The schema version (the file's *format*) lives in
``PRAGMA user_version``; each entry of ``MIGRATIONS`` brings the file from format ``n - 1`` to ``n``
inside one transaction.

Beside it, as SQLite does for its own file format (its header's read and write versions), the
``meta`` row ``min_reader_format`` says which oldest format a reader must understand to use the
file.  An additive migration (a new table, a new nullable column an old version may ignore) keeps
it where it was, so the version before can still open the file after an upgrade: a rollback keeps
every pending record.  A migration an old version truly cannot follow raises it (``MIN_READER``),
and that old version then refuses the file with both versions named (``OutboxTooNew``) instead of
treating it as damaged.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from gateway import __version__
from gateway.clock import PLAUSIBLE_EPOCH
from gateway.outbox import salvage
from gateway.outbox.types import OutboxError, OutboxTooNew
from gateway.records import RecordKind

log = structlog.get_logger()

CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
FULL_CODES = frozenset({sqlite3.SQLITE_FULL})


def _v1(conn: sqlite3.Connection) -> None:
    # statement by statement: executescript() would COMMIT the migration's transaction early
    _run_script(conn, """
        -- AUTOINCREMENT: an id is never reused, so a late or repeated ack can only ever
        -- delete the record it was meant for
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            key TEXT NOT NULL UNIQUE,
            patient TEXT NOT NULL,
            seq INTEGER NOT NULL,
            created REAL NOT NULL,
            payload BLOB NOT NULL
        );
        -- lease order within a class, and "oldest row of a class"
        CREATE INDEX outbox_class_seq ON outbox(kind, seq);
        -- recently delivered deterministic (billing) keys, so a re-emitted record is a no-op
        CREATE TABLE delivered (key TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
        CREATE INDEX delivered_at ON delivered(at);
        -- small key/value table other modules commit together with their records
        CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        """)


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    lines = [ln.split("--", 1)[0] for ln in script.splitlines()]
    for stmt in "\n".join(lines).split(";"):
        if stmt.strip():
            conn.execute(stmt)


def _v2(conn: sqlite3.Connection) -> None:
    # position of the record in the gateway's hash chain (gateway.chain); NULL: not chained
    conn.execute("ALTER TABLE outbox ADD COLUMN chain_n INTEGER")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1, 2: _v2}
LATEST = max(MIGRATIONS)

# 2: rows may be sealed (AES-GCM blobs, hashed keys): a format-1 reader would publish ciphertext
MIN_READER: dict[int, int] = {1: 1, 2: 2}
"""Per format: the oldest format whose reader can use a file of this format.  Raise it only for a
change an older version would misread (a renamed column, a changed payload encoding)."""

_META_MIN_READER = "min_reader_format"
_META_WRITTEN_BY = "written_by"


class CorruptDatabase(Exception):
    """The file is not a usable outbox database (damaged, or not SQLite)."""


def is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, CorruptDatabase) or (
        isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorcode", None) in CORRUPT_CODES
    )


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.DatabaseError):
        return getattr(exc, "sqlite_errorcode", None) in FULL_CODES
    return isinstance(exc, OSError) and exc.errno == 28  # ENOSPC


def migrate(conn: sqlite3.Connection, path: Path | str = "") -> int:
    """Bring the file to ``LATEST``; a newer file is used as it is when this version may read it.

    Returns the file's format after the call.  Raises ``OutboxTooNew`` (nothing changed) when the
    file's minimum reader format is above what this version understands.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > LATEST:
        min_reader = _meta_int(conn, _META_MIN_READER)
        if min_reader is None or min_reader > LATEST:
            raise OutboxTooNew(
                str(path),
                file_format=version,
                min_reader=min_reader if min_reader is not None else version,
                reads_up_to=LATEST,
                written_by=_meta_str(conn, _META_WRITTEN_BY),
            )
        log.warning("outbox_newer_format", file_format=version, min_reader=min_reader, reads_up_to=LATEST,
                    written_by=_meta_str(conn, _META_WRITTEN_BY), hint="a rollback: newer fields are kept as they are")
        return int(version)
    for target in range(version + 1, LATEST + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[target](conn)
            conn.execute(f"PRAGMA user_version = {target:d}")
            conn.execute(
                "INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (_META_MIN_READER, str(MIN_READER[target]))
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("outbox_migrated", to_version=target)
    upsert = "INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)"
    if _meta_int(conn, _META_MIN_READER) is None:  # files made before the row existed
        conn.execute(upsert, (_META_MIN_READER, str(MIN_READER[LATEST])))
    if _meta_str(conn, _META_WRITTEN_BY) != __version__:
        conn.execute(upsert, (_META_WRITTEN_BY, __version__))
    return LATEST


def _meta_str(conn: sqlite3.Connection, name: str) -> str | None:
    try:
        return read_meta(conn, name)
    except sqlite3.OperationalError:  # no meta table: not a file this software wrote
        return None


def _meta_int(conn: sqlite3.Connection, name: str) -> int | None:
    raw = _meta_str(conn, name)
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def connect(path: Path, *, max_db_bytes: int | None = None) -> sqlite3.Connection:
    """Open, check and migrate; raises CorruptDatabase or sqlite3 errors (the caller sorts them)."""
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per group commit.
    private_file(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True, timeout=10.0)
    try:
        # deleted rows (delivered, dropped) are overwritten with zeros, not left in free pages
        conn.execute("PRAGMA secure_delete=ON")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"cannot switch {path} to WAL (journal_mode={mode})")
        conn.execute("PRAGMA synchronous=FULL")
        # "accepted" means on disk: refuse to run on a build that silently ignored the setting
        if conn.execute("PRAGMA synchronous").fetchone()[0] != 2:
            raise OutboxError("SQLite refused synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        result = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        if result != ["ok"]:
            raise CorruptDatabase("quick_check: " + "; ".join(map(str, result)))
        migrate(conn, path)
        if max_db_bytes is not None:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(1, max_db_bytes // page):d}")
    except BaseException:
        conn.close()
        raise
    return conn


def private_file(path: Path) -> None:
    """Create the database file owner-only (0600) before SQLite does (it would follow the umask),
    and take group-write and all "other" access from an existing one; SQLite gives its -wal and
    -shm files the database file's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o037:
            os.chmod(path, mode & 0o740)
        return
    os.close(fd)


def _utc_stamp() -> str:
    return datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")


def move_aside(path: Path) -> Path:
    """Rename the file (and its -wal/-shm) to ``<name>.corrupt-<UTC>``; returns the new name."""
    base = path.with_name(f"{path.name}.corrupt-{_utc_stamp()}")
    target, n = base, 1
    while target.exists():
        target = base.with_name(f"{base.name}.{n}")
        n += 1
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, f"{target}{suffix}")
            os.utime(f"{target}{suffix}")  # the quarantine age counts from now (purge_quarantine)
    return target


def peek_meta(path: Path) -> dict[str, str]:
    """The meta table read without writing anything (no -wal/-shm, no migration); {} if unreadable.

    ``immutable=1`` skips locking and the WAL: good enough for the key check that must run before
    anything touches the file (the full check repeats on the opened connection).
    """
    if not path.exists():
        return {}
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
        try:
            return {str(k): str(v) for k, v in conn.execute("SELECT name, value FROM meta")}
        finally:
            conn.close()
    except sqlite3.Error:
        return {}  # damaged or not an outbox yet: open_or_recover sorts that out


def purge_quarantine(path: Path, max_age_s: float, now: float) -> list[Path]:
    """Delete files ``move_aside`` made (and their -wal/-shm) once older than ``max_age_s``.

    Ages are judged by the wall clock, which a Pi without an RTC may not have yet: nothing is
    deleted while ``now`` is before ``PLAUSIBLE_EPOCH``, and a file whose time is not plausible
    (moved aside before NTP, stamped 1970, or ahead of ``now``) has its age unknown: it is
    stamped with ``now`` and kept ``max_age_s`` from then.  Wrong either way, the rule keeps a file
    longer, never deletes one early.
    """
    gone: list[Path] = []
    if now < PLAUSIBLE_EPOCH:
        return gone
    for p in path.parent.glob(f"{path.name}.corrupt-*"):
        try:
            stamped = p.stat().st_mtime
            if stamped < PLAUSIBLE_EPOCH or stamped > now:
                os.utime(p, (now, now))
                log.info("outbox_quarantine_restamped", path=str(p), was=stamped)
            elif now - stamped > max_age_s:
                p.unlink()
                gone.append(p)
        except OSError as e:
            log.warning("outbox_quarantine_purge_failed", path=str(p), error=str(e))
    if gone:
        log.info("outbox_quarantine_purged", files=[p.name for p in gone])
    return gone


def salvage_meta(path: Path) -> dict[str, str]:
    """The meta table of a damaged file moved aside, read through its WAL (not ``immutable``: a
    stale chain head would reuse positions); {} when that part is damaged too."""
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=1.0)
        try:
            return {str(k): str(v) for k, v in conn.execute("SELECT name, value FROM meta")}
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def open_or_recover(path: Path, *, on_corrupt: Callable[[str, Path], None],
                    max_db_bytes: int | None = None) -> sqlite3.Connection:
    """Open the outbox; a damaged file is first repaired in place (its indexes rebuilt), and if it
    is still damaged, moved aside once and replaced by a fresh one holding every row that could be
    read from it (``salvage``; ``on_corrupt`` hears what happened and where the file went).

    Anything else (permissions, missing folder, a second failure) raises OutboxError: the caller
    stops with a clear message instead of restarting into the same damage forever.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return connect(path, max_db_bytes=max_db_bytes)
    except (sqlite3.DatabaseError, CorruptDatabase) as e:
        if not is_corruption(e):
            raise OutboxError(f"cannot open outbox {path}: {e}") from e
        first = e
    if salvage.repair_in_place(path):
        with contextlib.suppress(sqlite3.DatabaseError, CorruptDatabase):
            return connect(path, max_db_bytes=max_db_bytes)
    moved = move_aside(path)
    try:
        conn = connect(path, max_db_bytes=max_db_bytes)
    except (sqlite3.DatabaseError, CorruptDatabase) as e:
        raise OutboxError(f"cannot create a fresh outbox at {path}: {e}") from e
    try:
        got = salvage.copy_rows(moved, conn)
    except BaseException:
        conn.close()
        raise
    detail = f"{path} unusable ({first}); moved to {moved.name}, {got.summary()} into a fresh outbox"
    log.error("outbox_corrupt", path=str(path), moved_to=str(moved), error=str(first),
              salvaged=got.records, lost=got.records_lost)
    on_corrupt(detail, moved)
    return conn


# ---- persisted counters (so stats survive restarts and `inspect` can show them) -------------


@dataclass
class Counters:
    accepted: int = 0
    delivered: int = 0
    refused: int = 0
    commits: int = 0
    last_delivery: float | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    leased: dict[str, int] = field(default_factory=dict)  # as of the last commit, for `inspect`

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> Counters:
        if not text:
            return cls()
        try:
            raw = json.loads(text)
        except ValueError:
            return cls()  # counters are informative; a damaged value must not stop the outbox
        c = cls()
        for name in ("accepted", "delivered", "refused", "commits"):
            v = raw.get(name)
            if isinstance(v, int):
                setattr(c, name, v)
        ld = raw.get("last_delivery")
        c.last_delivery = float(ld) if isinstance(ld, int | float) else None
        for name in ("dropped", "leased"):
            v = raw.get(name)
            if isinstance(v, dict):
                setattr(c, name, {str(k): int(n) for k, n in v.items() if isinstance(n, int)})
        return c


def read_meta(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def class_totals(conn: sqlite3.Connection) -> dict[RecordKind, int]:
    totals = dict.fromkeys(RecordKind, 0)
    for kind, n in conn.execute("SELECT kind, COUNT(*) FROM outbox GROUP BY kind"):
        if kind in RecordKind.__members__.values():
            totals[RecordKind(kind)] = int(n)
    return totals


def load_state(conn: sqlite3.Connection, prefix: str) -> dict[str, bytes]:
    cur = conn.execute("SELECT key, value FROM state WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
    return {str(k): bytes(v) for k, v in cur}


def oldest_created(conn: sqlite3.Connection) -> dict[RecordKind, float | None]:
    out: dict[RecordKind, float | None] = {}
    for kind in RecordKind:
        # seq follows creation order, and (kind, seq) is indexed: one index probe per class
        row = conn.execute(
            "SELECT created FROM outbox WHERE kind = ? ORDER BY seq LIMIT 1", (kind.value,)
        ).fetchone()
        out[kind] = None if row is None else float(row[0])
    return out


def file_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{suffix}").st_size
    return total
