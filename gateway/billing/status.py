"""``iomt-gateway billing``: per patient, the current period, its days and what it will bill.

Reads the ledger's saved state from the outbox file, read-only, so it is safe while the daemon runs
(what it shows is as of the ledger's last save: at most ``persist_interval_s`` behind for counters,
never behind for days or records).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.billing.book import StateFormatError
from gateway.billing.ledger import STATE_PREFIX, new_book, patients_from_config, state_key
from gateway.billing.views import PatientBillingView, view_of


def render(view: PatientBillingView) -> str:
    lines = [f"{view.patient}  (days cut in {view.timezone})"]
    if view.period_start is None:
        lines.append("  no open period")
    else:
        lines.append(
            f"  period {view.period_start} .. {view.period_end}: {view.days_counted} day(s) of data"
            + (f", last {view.dates[-1]}" if view.dates else "")
        )
        if view.projected_code is None:
            lines.append("  will bill: nothing yet (below the lowest device-supply tier)")
        else:
            sent = f"{view.status.value} sent upstream" if view.status else "not sent yet"
            lines.append(f"  will bill: {view.projected_code} if the period closed now ({sent})")
    lines.append(f"  set-up: {'sent' if view.setup_sent else 'not yet'}")
    for h in reversed(view.history):
        lines.append(f"  closed {h.period.start} .. {h.period.end}: {h.days} day(s) -> {h.code or 'nothing billable'}")
    if view.counters:
        lines.append(
            "  not counted: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(view.counters.items()))
        )
    return "\n".join(lines)


def status_main(argv: list[str]) -> int:
    from gateway import keyring  # noqa: PLC0415
    from gateway.config import DEFAULT_CONFIG  # noqa: PLC0415
    from gateway.config.errors import ConfigError  # noqa: PLC0415
    from gateway.config.loader import load_config_for_tools  # noqa: PLC0415
    from gateway.config.paths import resolve_paths  # noqa: PLC0415
    from gateway.outbox import Outbox, OutboxError  # noqa: PLC0415

    ap = argparse.ArgumentParser(
        prog="iomt-gateway billing",
        description="Per patient: the current 30-day period, its days of data and what it will bill.\n"
        "Reads what the running daemon saved (safe while it runs); day counts are never behind,\n"
        "reading counters at most a few seconds behind.",
        epilog="examples:\n"
        "  sudo -u iomt-gateway iomt-gateway billing -c /etc/iomt-gateway/config.yaml\n"
        "  iomt-gateway billing simulate readings.csv --tz America/Chicago   (see: billing simulate --help)\n\n"
        "exit status: 0 success, 1 runtime failure, 2 usage or config error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "-c", "--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default: {DEFAULT_CONFIG})"
    )
    ap.add_argument("--db", type=Path, help="outbox database file (default: the config's)")
    ap.add_argument("--json", action="store_true", help="one JSON object per patient")
    args = ap.parse_args(argv)
    try:
        config: Any = load_config_for_tools(args.config)
    except ConfigError as e:
        print(f"iomt-gateway billing: {e.render()}", file=sys.stderr)
        return 2
    paths = resolve_paths(args.config, config)
    db: Path = args.db or paths.outbox
    if not db.exists():
        print(f"iomt-gateway billing: no outbox database at {db} (has the daemon run?)", file=sys.stderr)
        return 1
    try:
        # the saved state is sealed with the daemon's keyring (readable by the service user/root)
        ring = keyring.load(paths.keyring) if paths.keyring.exists() else None
        states = Outbox.read_state(db, STATE_PREFIX, keyring=ring)
    except (OutboxError, keyring.KeyringError) as e:
        print(f"iomt-gateway billing: {e}", file=sys.stderr)
        return 1
    views: list[PatientBillingView] = []
    for patient, info in patients_from_config(config).items():
        book = new_book(patient, info, config.billing, config.gateway.id)
        raw = states.get(state_key(patient))
        if raw is not None:
            try:
                book.load_state(raw)
            except StateFormatError as e:
                print(f"iomt-gateway billing: {e}", file=sys.stderr)
                return 1
        views.append(view_of(book))
    for v in views:
        print(json.dumps(v.to_json()) if args.json else render(v) + "\n")
    return 0
