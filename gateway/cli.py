"""``iomt-gateway`` command line.  Each verb imports what it needs only when it runs, so
``check-config`` stays quick and the daemon's start-up does not pay for tools it does not use."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from gateway import __version__, plugins


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="iomt-gateway",
        description="Edge gateway for bedside and home medical devices.",
    )
    ap.add_argument("--version", action="version", version=f"iomt-gateway {__version__}")
    sub = ap.add_subparsers(dest="verb", metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (what the systemd unit starts)")
    run.add_argument("-c", "--config", type=Path, required=True, help="YAML config file")
    run.add_argument("--log-format", choices=["auto", "console", "json"], help="override logging.format")

    cc = sub.add_parser("check-config", help="validate a config file and print a summary")
    cc.add_argument("file", type=Path)

    sc = sub.add_parser("schema", help="write the config's JSON Schema (for editors)")
    sc.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    ob = sub.add_parser("outbox", help="outbox depth per class, oldest pending age, last delivery")
    src = ob.add_mutually_exclusive_group(required=True)
    src.add_argument("-c", "--config", type=Path, help="config file (reads its storage.path)")
    src.add_argument("--db", type=Path, help="outbox database file")
    ob.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser("demo", help="run the gateway on the recorded fixtures with a live view")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--speed", type=float, default=10.0, help="replay speed (default 10x real time)")
    demo.add_argument("--offline", action="store_true", help="do not start a broker; watch the outbox fill")
    demo.add_argument("--state", type=Path, default=None, help="state directory (default: a temporary one)")

    dec = sub.add_parser("decode", help="decode a capture or payloads with the daemon's own decoders")
    dec.add_argument("protocol", help=f"one of: {', '.join(plugins.names(plugins.DECODERS_GROUP)) or '(none)'}")
    dec.add_argument("args", nargs=argparse.REMAINDER, help="FILE|- for serial protocols, HEX... for BLE")

    bil = sub.add_parser("billing", help="RPM billing: current periods, or simulate over a CSV")
    bil.add_argument("args", nargs=argparse.REMAINDER)

    for name in plugins.names(plugins.COMMANDS_GROUP):
        p = sub.add_parser(name, help="(plug-in command)", add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)
    return ap


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    # Verbs with their own parsers get everything after the verb (argparse's REMAINDER refuses
    # options right after it, e.g. `scan --seconds 5`).
    if raw[:1] == ["billing"]:
        from gateway.billing.cli import main as billing_main  # noqa: PLC0415

        return billing_main(raw[1:])
    if raw[:1] == ["decode"] and len(raw) > 1 and not raw[1].startswith("-"):
        return _decode(raw[1], raw[2:])
    if raw and raw[0] in plugins.names(plugins.COMMANDS_GROUP):
        fn = plugins.load(plugins.COMMANDS_GROUP, raw[0])
        assert fn is not None
        return fn(raw[1:])
    ap = _parser()
    args = ap.parse_args(argv)
    verb = args.verb
    if verb is None:
        ap.print_help()
        return 2
    if verb == "run":
        return _run(args.config, args.log_format)
    if verb == "check-config":
        from gateway.config.commands import check_config_command  # noqa: PLC0415

        return check_config_command(args.file)
    if verb == "schema":
        from gateway.config.commands import schema_command  # noqa: PLC0415

        return schema_command(args.output)
    if verb == "outbox":
        return _outbox(args.config, args.db, args.json)
    if verb == "demo":
        from gateway.demo import run_demo  # noqa: PLC0415

        return run_demo(duration=args.duration, speed=args.speed, offline=args.offline, state=args.state)
    if verb == "decode":
        return _decode(args.protocol, list(args.args))
    fn = plugins.load(plugins.COMMANDS_GROUP, verb)
    assert fn is not None
    return fn(list(args.args))


def _decode(protocol: str, argv: list[str]) -> int:
    fn = plugins.load(plugins.DECODERS_GROUP, protocol)
    if fn is None:
        known = ", ".join(plugins.names(plugins.DECODERS_GROUP))
        print(f"iomt-gateway decode: unknown protocol {protocol!r}; known: {known}", file=sys.stderr)
        return 2
    return fn(argv)


def _run(config: Path, log_format: str | None) -> int:
    from gateway import logs  # noqa: PLC0415
    from gateway.config.loader import ConfigError, load_config  # noqa: PLC0415

    try:
        cfg = load_config(config)
    except ConfigError as e:
        logs.configure("info", "auto")
        print(e.render(), file=sys.stderr)
        return 2
    fmt = log_format or cfg.logging.format
    logs.configure(cfg.logging.level, fmt)  # type: ignore[arg-type]
    import structlog  # noqa: PLC0415

    from gateway.daemon import Daemon  # noqa: PLC0415
    from gateway.outbox import OutboxError, OutboxTooNew  # noqa: PLC0415

    try:
        asyncio.run(Daemon(config, cfg).run())
    except KeyboardInterrupt:
        return 130
    except OutboxTooNew as e:
        # A restart cannot fix this (systemd: RestartPreventExitStatus=2); the file stays as it is.
        structlog.get_logger().error("outbox_too_new", problem=str(e), file_format=e.file_format,
                                     min_reader=e.min_reader, reads_up_to=e.reads_up_to)
        print(f"iomt-gateway: {e}", file=sys.stderr)
        return 2
    except OutboxError as e:
        structlog.get_logger().error("outbox_unusable", problem=str(e))
        print(f"iomt-gateway: {e}", file=sys.stderr)
        return 1
    return 0


def _outbox(config: Path | None, db: Path | None, as_json: bool) -> int:
    from gateway.outbox import Outbox  # noqa: PLC0415

    if db is None:
        assert config is not None
        from gateway.config.loader import ConfigError, load_config  # noqa: PLC0415
        from gateway.daemon import resolve_paths  # noqa: PLC0415

        try:
            cfg = load_config(config)
        except ConfigError as e:
            print(e.render(), file=sys.stderr)
            return 2
        db = resolve_paths(config, cfg).outbox
    if not db.exists():
        print(f"iomt-gateway outbox: no outbox database at {db}", file=sys.stderr)
        return 1
    stats = Outbox.inspect(db)
    if as_json:
        print(
            json.dumps(
                {
                    "classes": {k.value: vars(v) for k, v in stats.classes.items()},
                    "accepted": stats.accepted,
                    "delivered": stats.delivered,
                    "last_delivery": stats.last_delivery,
                    "db_bytes": stats.db_bytes,
                }
            )
        )
        return 0
    from gateway.status_view import format_outbox  # noqa: PLC0415

    print(format_outbox(stats, db))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
