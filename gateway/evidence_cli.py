"""``iomt-gateway evidence ALARM_ID``: render the waveform strip behind an alarm as a PNG.

The strip is read from the gateway's own copy of its latest strips (in the outbox's state,
sealed with the daemon's keyring when the outbox is) or from a received record (``--record``).
Rendering needs matplotlib: ``uv sync --extra plots`` (or ``pip install 'iomt-gateway[plots]'``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from pydantic import ValidationError

from gateway.config import DEFAULT_CONFIG
from gateway.evidence_codec import EvidenceFormatError, decode
from gateway.evidence_store import EVIDENCE_STATE_PREFIX, alarm_of
from gateway.records import EvidenceRecord

PROG = "iomt-gateway evidence"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Render the waveform strip behind an alarm as a PNG (beat marks, onset, raise).",
        epilog="example:\n  iomt-gateway evidence 'p-a/ventricular_fibrillation/strap/1780000035800' "
        "-c /etc/iomt-gateway/config.yaml -o vf.png\n\n"
        "exit status: 0 success, 1 runtime failure (no such strip, matplotlib missing), 2 usage or config error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("alarm_id", nargs="?", help="the alarm's id (as in its alarm records)")
    ap.add_argument(
        "-c", "--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default: {DEFAULT_CONFIG})"
    )
    ap.add_argument("--db", type=Path, help="outbox database file (default: the config's)")
    ap.add_argument("--record", type=Path, help="a received evidence record (JSON) instead of the gateway's copy")
    ap.add_argument("--list", action="store_true", help="list the alarm ids of the strips the gateway keeps")
    ap.add_argument("-o", "--output", type=Path, help="PNG file to write (default: evidence-<alarm>.png)")
    return ap


def _kept(config: Path, db: Path | None) -> dict[str, bytes]:
    from gateway import keyring  # noqa: PLC0415
    from gateway.config.loader import load_config_for_tools  # noqa: PLC0415
    from gateway.config.paths import resolve_paths  # noqa: PLC0415
    from gateway.outbox import Outbox  # noqa: PLC0415

    ring = None
    if db is None or config.exists():  # --db alone reads an outbox in clear
        paths = resolve_paths(config, load_config_for_tools(config))
        db = db or paths.outbox
        # the saved state is sealed with the daemon's keyring (readable by the service user/root)
        ring = keyring.load(paths.keyring) if paths.keyring.exists() else None
    if not db.exists():
        raise FileNotFoundError(f"no outbox database at {db} (has the daemon run?)")
    return {alarm_of(k): v for k, v in Outbox.read_state(db, EVIDENCE_STATE_PREFIX, keyring=ring).items()}


def evidence_main(argv: list[str]) -> int:
    from gateway.config.loader import ConfigError  # noqa: PLC0415
    from gateway.keyring import KeyringError  # noqa: PLC0415
    from gateway.outbox import OutboxError  # noqa: PLC0415

    args = _parser().parse_args(argv)
    if not args.list and not args.alarm_id and not args.record:
        print(f"{PROG}: name the alarm (ALARM_ID), give --record FILE, or --list", file=sys.stderr)
        return 2
    try:
        if args.record:
            raw = args.record.read_bytes()
        else:
            kept = _kept(args.config, args.db)
            if args.list:
                for alarm_id in kept:
                    print(alarm_id)
                return 0
            if args.alarm_id not in kept:
                print(f"{PROG}: no strip kept for alarm {args.alarm_id!r} ({len(kept)} kept; --list)", file=sys.stderr)
                return 1
            raw = kept[args.alarm_id]
        record = EvidenceRecord.model_validate_json(raw)
        decode(record.data, record.sample_format, record.n_samples)  # a damaged strip fails here, clearly
    except ConfigError as e:
        print(f"{PROG}: {e.render()}", file=sys.stderr)
        return 2
    except (OSError, OutboxError, KeyringError, EvidenceFormatError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except (ValidationError, json.JSONDecodeError) as e:
        print(f"{PROG}: not an evidence record: {e}", file=sys.stderr)
        return 1
    if args.alarm_id and record.alarm_id != args.alarm_id:
        print(f"{PROG}: the record is the strip of {record.alarm_id!r}, not {args.alarm_id!r}", file=sys.stderr)
        return 1
    out = args.output or Path(f"evidence-{re.sub(r'[^A-Za-z0-9_.-]+', '_', record.alarm_id)}.png")
    try:
        from gateway.evidence_plot import render  # noqa: PLC0415

        render(record, out)
    except ModuleNotFoundError as e:
        print(
            f"{PROG}: {e.name} is needed to draw: uv sync --extra plots (or pip install 'iomt-gateway[plots]')",
            file=sys.stderr,
        )
        return 1
    print(
        f"{out}: {record.condition}, {record.n_samples / record.sample_rate_hz:.1f} s of {record.channel}, "
        f"{len(record.beats)} beats marked, raised at {record.raise_index / record.sample_rate_hz:.1f} s"
        + (f", {len(record.pace)} pacing pulses marked" if record.pace else "")
    )
    return 0
