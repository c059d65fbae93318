"""A copy of the key reservation outside the database: ``<outbox>.seq-floor``.

Record keys ``<gateway>:<seq>`` are idempotency keys: a receiver that has seen one drops a
second record under it as a resend.  The reservation (``meta.seq_hi``) lives in the database, so
a file found damaged at start and moved aside would take it along, the fresh file would number
from 1 again, and every new summary, alarm and status record would reuse a key the practice
already holds — and be dropped there as a duplicate.  This small file keeps the floor: written
(atomically, fsynced) whenever a block of numbers is reserved, before the reservation commits, so
it is never below a number any committed record carries.  One write per 10,000 records.

A missing or unreadable floor file is not an error (older versions did not write one): the
database's own reservation is used, as before.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

log = structlog.get_logger()

SUFFIX = ".seq-floor"


def floor_path(db: Path) -> Path:
    return db.with_name(db.name + SUFFIX)


def read(db: Path) -> int:
    """The reserved floor, or 0 when there is none (first start, or written by an older version)."""
    path = floor_path(db)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as e:
        log.warning("outbox_seq_floor_unreadable", path=str(path), error=str(e))
        return 0
    if not text.isdigit() or len(text) > 18:
        log.warning("outbox_seq_floor_unreadable", path=str(path), error=f"not a sequence number: {text[:40]!r}")
        return 0
    return int(text)


def write(db: Path, hi: int) -> None:
    """Record ``hi`` durably; raises OSError (the caller decides whether that is fatal)."""
    path = floor_path(db)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{hi}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename's durability; not every file system allows it
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
