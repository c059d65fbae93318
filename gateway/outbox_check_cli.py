"""``iomt-gateway outbox --check``: which rows of the outbox fail authentication, and where the
chain stored in the file does not link (gateway/outbox/audit.py).  Exit 0 all rows good, 1 any bad
row or chain break (or the file cannot be read), 2 a keyring that is not the file's."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from gateway import keyring
from gateway.outbox import Outbox, OutboxError, OutboxKeyError
from gateway.outbox.audit import AuditReport

MAX_LISTED = 50  # a damaged card can fail thousands of rows: the count says it, the list shows a sample


def check_command(db: Path, ring_path: Path | None, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    try:
        # a file written without a keyring needs none; a sealed one is opened with the given keyring,
        # else the one the daemon would use
        ring = keyring.load(keyring.resolve(ring_path)) if _sealed(db) else None
        report = Outbox.audit(db, keyring=ring)
    except (keyring.KeyringError, OutboxKeyError) as e:
        print(f"iomt-gateway outbox --check: {e}", file=sys.stderr)
        return 2
    except (OutboxError, OSError) as e:
        print(f"iomt-gateway outbox --check: {e}", file=sys.stderr)
        return 1
    if as_json:
        doc = {**asdict(report), "ok": report.ok}
        print(json.dumps(doc), file=out)
    else:
        print(_text(report, db), file=out)
    return 0 if report.ok else 1


def _sealed(db: Path) -> bool:
    return bool(Outbox.key_ids(db))


def _text(r: AuditReport, db: Path) -> str:
    lines = [f"{db}: {r.records} records, {r.states} state rows checked ({r.in_clear} in clear, not judged)"]
    if r.ok:
        lines.append("every sealed row authenticates; the stored chain links up")
        return "\n".join(lines)
    if r.bad:
        lines.append(f"{len(r.bad)} row(s) fail authentication (never sent; the daemon parks them):")
    for b in r.bad[:MAX_LISTED]:
        when = "" if b.created is None else " created " + datetime.fromtimestamp(b.created, tz=UTC).isoformat(
            timespec="seconds")
        where = f"outbox row {b.row} ({b.kind}{when})" if b.table == "outbox" else f"state row {b.row}"
        lines.append(f"  {where}: {b.reason}")
    if len(r.bad) > MAX_LISTED:
        lines.append(f"  ... and {len(r.bad) - MAX_LISTED} more (--json lists them all)")
    if r.chain_breaks:
        shown = ", ".join(f"{n}->{n + 1}" for n in r.chain_breaks[:MAX_LISTED])
        lines.append(f"chain does not link between positions {shown}")
    return "\n".join(lines)
