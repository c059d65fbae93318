"""``iomt-gateway billing``: what each patient's current period holds, or a simulation over a CSV.

    iomt-gateway billing -c CONFIG [--json]        per patient: period, days counted, what it will bill
    iomt-gateway billing --db OUTBOX -c CONFIG      same, from another outbox file
    iomt-gateway billing simulate READINGS.csv [--tz ZONE] [-c CONFIG] [--until ISO] [--latest] [--fhir]

The status view reads the ledger's state from the outbox database read-only (safe while the daemon
runs).  The simulation prints one JSON object per line: the records upstream would receive.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.billing.days import host_zone
from gateway.billing.fhir import charge_item
from gateway.billing.ledger import PatientBilling, patients_from_config
from gateway.billing.simulate import Simulation, latest_versions, read_rows
from gateway.config.billing import BillingSection

EXIT_OK = 0
EXIT_ROWS = 1  # some rows were rejected (the records of the others are still printed)
EXIT_USAGE = 2


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown time zone {name!r} (use an IANA name like America/Chicago)"
        ) from None


def _instant(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ISO 8601") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset")
    return dt.timestamp()


def _load_config(path: Path) -> Any:
    from gateway.config.loader import load_config_for_tools  # noqa: PLC0415 - only when asked for

    return load_config_for_tools(path)


def _simulate(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="iomt-gateway billing simulate",
        description="Run the billing ledger over a CSV of patient,device,timestamp rows and print the records\n"
        "upstream would receive, one JSON object per line (FHIR R4 ChargeItems with --fhir).",
        epilog="example:\n  iomt-gateway billing simulate readings.csv --tz America/Chicago --latest\n\n"
        "exit status: 0 success, 1 some rows were rejected (the others still count), 2 usage or config error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("csv", type=Path, help="patient,device,timestamp rows ('-' for stdin)")
    ap.add_argument("--tz", type=_zone, help="zone cutting days for every patient (default: config, else host)")
    ap.add_argument("-c", "--config", type=Path, help="take rules, patient zones, devices and enrolment from it")
    ap.add_argument("--until", type=_instant, help="close only periods ended by then (default: close all)")
    ap.add_argument("--latest", action="store_true", help="print only the last version of each service")
    ap.add_argument("--fhir", action="store_true", help="print FHIR R4 ChargeItems instead of records")
    args = ap.parse_args(argv)
    cfg = BillingSection()
    known: dict[str, PatientBilling] = {}
    gateway_id = "simulate"
    if args.config is not None:
        from gateway.config.errors import ConfigError  # noqa: PLC0415

        try:
            config = _load_config(args.config)
        except ConfigError as e:
            print(f"iomt-gateway billing simulate: {e.render()}", file=sys.stderr)
            return EXIT_USAGE
        cfg, gateway_id = config.billing, config.gateway.id
        known = patients_from_config(config)
    if args.tz is not None:
        known = {p: PatientBilling(args.tz, info.enrolment, info.devices) for p, info in known.items()}
    default_zone = args.tz or (ZoneInfo(cfg.timezone) if cfg.timezone else host_zone())
    try:
        if str(args.csv) == "-":
            rows, errors = read_rows(sys.stdin)
        else:
            with args.csv.open(encoding="utf-8-sig", newline="") as f:
                rows, errors = read_rows(f)
    except (OSError, UnicodeDecodeError) as e:
        print(f"iomt-gateway billing simulate: cannot read {args.csv}: {e}", file=sys.stderr)
        return EXIT_USAGE
    for msg in errors:
        print(f"{args.csv}: {msg}", file=sys.stderr)
    sim = Simulation(cfg, default_zone, known, gateway_id)
    records = sim.run(rows, args.until)
    if args.latest:
        records = latest_versions(records)
    for r in records:
        print(json.dumps(charge_item(r)) if args.fhir else r.model_dump_json())
    counts = {k: v for b in sim.books.values() for k, v in b.counters.items()}
    print(
        f"{len(rows)} rows, {len(errors)} rejected, {len(sim.books)} patients, {len(records)} records"
        + "".join(f", {v} {k.replace('_', ' ')}" for k, v in sorted(counts.items())),
        file=sys.stderr,
    )
    return EXIT_ROWS if errors else EXIT_OK


def main(argv: list[str]) -> int:
    if argv[:1] == ["simulate"]:
        return _simulate(argv[1:])
    from gateway.billing.status import status_main  # noqa: PLC0415

    return status_main(argv)
