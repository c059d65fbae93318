"""``iomt-gateway`` command line.  Each verb imports what it needs only when it runs, so
``check-config`` stays quick and the daemon's start-up does not pay for tools it does not use."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from gateway import __version__, plugins
from gateway.config import DEFAULT_CONFIG

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and something is wrong (broker unreachable, a check failed, ...)
EXIT_USAGE = 2  # wrong arguments, or a config file that does not validate

_EPILOG = """\
exit status: 0 success, 1 runtime failure, 2 usage or config error.
Each command's --help shows an example.  Commands that read the config take -c FILE
(default: /etc/iomt-gateway/config.yaml)."""

# verb -> (what it does, example): the one place the built-in verbs' help lives.
VERBS: dict[str, tuple[str, str]] = {
    "run": ("run the daemon (what the systemd unit starts)", "iomt-gateway run -c /etc/iomt-gateway/config.yaml"),
    "check-config": (
        "validate a config file; print its devices, ports, addresses and time zones",
        "iomt-gateway check-config -c /etc/iomt-gateway/config.yaml",
    ),
    "schema": ("write the config's JSON Schema (for editors)", "iomt-gateway schema -o config.schema.json"),
    "outbox": (
        "outbox depth per class, oldest pending age, last delivery",
        "iomt-gateway outbox -c /etc/iomt-gateway/config.yaml --json",
    ),
    "doctor": (
        "one checklist before leaving the home: config, credential files, broker (DNS, TCP, TLS, MQTT CONNECT), "
        "clock, devices, disk, outbox; exit 0 only if all pass",
        "sudo iomt-gateway doctor -c /etc/iomt-gateway/config.yaml",
    ),
    "status": (
        "what the running daemon sees now: devices, active alarms, uplink, outbox (read from its state directory)",
        "sudo -u iomt-gateway iomt-gateway status -c /etc/iomt-gateway/config.yaml",
    ),
    "demo": ("run the gateway on the recorded fixtures with a live view", "iomt-gateway demo --speed 20"),
    "decode": (
        "decode a capture or payloads with the daemon's own decoders",
        "iomt-gateway decode nonin2 capture.bin   |   iomt-gateway decode ble-heart-rate 1E5532002100",
    ),
    "billing": ("RPM billing: current periods, or simulate over a CSV", "iomt-gateway billing -c FILE"),
    "keys": (
        "the keyring: init (once, never overwrites), rotate, rotate-signing, prune, status, export the verifier key",
        "iomt-gateway keys init -c /etc/iomt-gateway/config.yaml",
    ),
    "evidence": (
        "render the waveform strip behind an alarm as a PNG (needs the 'plots' extra)",
        "iomt-gateway evidence ALARM_ID -c /etc/iomt-gateway/config.yaml -o strip.png",
    ),
    "verify": (
        "check a capture of published records against the gateway's signed checkpoints",
        "iomt-gateway verify --key hub.pub capture.tsv",
    ),
}


def _add(sub: Any, verb: str, **kw: Any) -> argparse.ArgumentParser:
    what, example = VERBS[verb]
    parser: argparse.ArgumentParser = sub.add_parser(
        verb,
        help=what,
        description=what[0].upper() + what[1:] + ".",
        epilog=f"example:\n  {example}\n\n{_EPILOG.splitlines()[0]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kw,
    )
    return parser


def _parser(plugin_help: bool = False) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="iomt-gateway",
        description="Edge gateway for bedside and home medical devices.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"iomt-gateway {__version__}")
    sub = ap.add_subparsers(dest="verb", metavar="COMMAND")

    run = _add(sub, "run")
    run.add_argument("-c", "--config", type=Path, required=True, help="YAML config file")
    run.add_argument("--log-format", choices=["auto", "console", "json"], help="override logging.format")

    cc = _add(sub, "check-config")
    cc.add_argument("file", type=Path, nargs="?", help="config file (same as -c)")
    cc.add_argument("-c", "--config", type=Path, help=f"config file (default: {DEFAULT_CONFIG})")

    sc = _add(sub, "schema")
    sc.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    ob = _add(sub, "outbox")
    src = ob.add_mutually_exclusive_group()
    src.add_argument(
        "-c", "--config", type=Path, help=f"config file (reads its storage.path; default: {DEFAULT_CONFIG})"
    )
    src.add_argument("--db", type=Path, help="outbox database file")
    ob.add_argument("--json", action="store_true", help="machine-readable output")
    ob.add_argument("--check", action="store_true",
                    help="open every row with the keyring: list rows that fail authentication (exit 1 if any)")
    ob.add_argument("--keyring", type=Path, help="keyring for --check with --db (default: as the daemon finds it)")

    doc = _add(sub, "doctor")
    doc.add_argument(
        "-c", "--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default: {DEFAULT_CONFIG})"
    )

    st = _add(sub, "status")
    st.add_argument(
        "-c", "--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default: {DEFAULT_CONFIG})"
    )
    st.add_argument("--json", action="store_true", help="the status document as the daemon wrote it")

    demo = _add(sub, "demo")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--speed", type=float, default=10.0, help="replay speed (default 10x real time)")
    demo.add_argument("--offline", action="store_true", help="do not start a broker; watch the outbox fill")
    demo.add_argument("--state", type=Path, default=None, help="state directory (default: a temporary one)")

    dec = _add(sub, "decode")
    dec.add_argument("protocol", help=f"one of: {', '.join(plugins.names(plugins.DECODERS_GROUP)) or '(none)'}")
    dec.add_argument("args", nargs=argparse.REMAINDER, help="FILE for serial protocols, HEX... for BLE")

    keys = _add(sub, "keys")
    keys.add_argument("args", nargs=argparse.REMAINDER)

    ver = _add(sub, "verify")
    ver.add_argument("args", nargs=argparse.REMAINDER)

    bil = _add(sub, "billing")
    bil.add_argument("args", nargs=argparse.REMAINDER)

    evi = _add(sub, "evidence")
    evi.add_argument("args", nargs=argparse.REMAINDER)

    for name in plugins.names(plugins.COMMANDS_GROUP):
        # Reading the plug-in's summary costs a source parse: only when help is shown.
        summary = (plugins.summary(plugins.COMMANDS_GROUP, name) if plugin_help else "") or "(plug-in command)"
        p = sub.add_parser(name, help=summary, add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)
    return ap


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    # Verbs with their own parsers get everything after the verb (argparse's REMAINDER refuses
    # options right after it, e.g. `scan --seconds 5`).
    if raw[:1] == ["billing"]:
        from gateway.billing.cli import main as billing_main  # noqa: PLC0415

        return billing_main(raw[1:])
    if raw[:1] == ["keys"]:
        from gateway.keys_cli import keys_main  # noqa: PLC0415

        return keys_main(raw[1:])
    if raw[:1] == ["evidence"]:
        from gateway.evidence_cli import evidence_main  # noqa: PLC0415

        return evidence_main(raw[1:])
    if raw[:1] == ["verify"]:
        from gateway.verify_cli import verify_main  # noqa: PLC0415

        return verify_main(raw[1:])
    if raw[:1] == ["decode"] and len(raw) > 1 and not raw[1].startswith("-"):
        return _decode(raw[1], raw[2:])
    if raw and raw[0] in plugins.names(plugins.COMMANDS_GROUP):
        fn = plugins.load(plugins.COMMANDS_GROUP, raw[0])
        assert fn is not None
        return fn(raw[1:])
    ap = _parser(plugin_help=not raw or any(a in ("-h", "--help") for a in raw))
    args = ap.parse_args(raw)
    verb = args.verb
    if verb is None:
        ap.print_help(sys.stderr)
        return EXIT_USAGE
    if verb == "run":
        return _run(args.config, args.log_format)
    if verb == "check-config":
        from gateway.config.commands import check_config_command  # noqa: PLC0415

        if args.file is not None and args.config is not None:
            print(
                "iomt-gateway check-config: name the config file once: check-config -c FILE (or check-config FILE)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return check_config_command(args.config or args.file or DEFAULT_CONFIG)
    if verb == "schema":
        from gateway.config.commands import schema_command  # noqa: PLC0415

        return schema_command(args.output)
    if verb == "outbox":
        return _outbox(args.config, args.db, args.json, check=args.check, ring=args.keyring)
    if verb == "doctor":
        from gateway.doctor import doctor_command  # noqa: PLC0415

        return doctor_command(args.config)
    if verb == "status":
        return _status(args.config, args.json)
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
        return EXIT_USAGE
    return fn(argv)


def print_config_error(verb: str, e: Any) -> None:
    """A config error on stderr: the header names the program, the problem lines stay ``file:line: ...``
    (the form editors jump to)."""
    head, *rest = e.render().splitlines()
    print("\n".join([f"iomt-gateway {verb}: {head}", *rest]), file=sys.stderr)


def _run(config: Path, log_format: str | None) -> int:
    from gateway import logs  # noqa: PLC0415
    from gateway.config.loader import ConfigError, load_config  # noqa: PLC0415

    try:
        cfg = load_config(config)
    except ConfigError as e:
        logs.configure("info", "auto")
        print_config_error("run", e)
        # Also as an error-level journal line: `journalctl -p warning` shows why the unit failed.
        import structlog  # noqa: PLC0415

        structlog.get_logger().error("config_invalid", file=str(config), problems=e.render())
        return EXIT_USAGE
    fmt = log_format or cfg.logging.format
    logs.configure(cfg.logging.level, fmt)  # type: ignore[arg-type]
    import structlog  # noqa: PLC0415

    from gateway.daemon import Daemon, StartRefused  # noqa: PLC0415
    from gateway.outbox import OutboxError, OutboxTooNew  # noqa: PLC0415

    try:
        asyncio.run(Daemon(config, cfg, own_process=True).run())
    except KeyboardInterrupt:
        return 130
    except StartRefused as e:
        # no or the wrong key: a restart cannot fix it (systemd: RestartPreventExitStatus=2)
        print(f"iomt-gateway: refusing to start: {e}", file=sys.stderr)
        return 2
    except OutboxTooNew as e:
        # A restart cannot fix this (systemd: RestartPreventExitStatus=2); the file stays as it is.
        structlog.get_logger().error(
            "outbox_too_new",
            problem=str(e),
            file_format=e.file_format,
            min_reader=e.min_reader,
            reads_up_to=e.reads_up_to,
        )
        print(f"iomt-gateway: {e}", file=sys.stderr)
        return 2
    except OutboxError as e:
        structlog.get_logger().error("outbox_unusable", problem=str(e))
        print(f"iomt-gateway: {e}", file=sys.stderr)
        return 1
    return 0


def _status(config: Path, as_json: bool) -> int:
    import time  # noqa: PLC0415

    from gateway import status_file  # noqa: PLC0415
    from gateway.config.loader import ConfigError, load_config_for_tools  # noqa: PLC0415
    from gateway.config.paths import resolve_paths  # noqa: PLC0415

    try:
        cfg = load_config_for_tools(config)
    except ConfigError as e:
        print_config_error("status", e)
        return EXIT_USAGE
    try:
        doc = status_file.read(status_file.status_path(resolve_paths(config, cfg).state_dir))
    except status_file.StatusUnavailable as e:
        print(f"iomt-gateway status: {e}", file=sys.stderr)
        return EXIT_FAILURE
    now = time.time()
    print(json.dumps(doc) if as_json else status_file.format_status(doc, now))
    stale = status_file.stale_s(doc, now)
    if stale is not None:
        print(
            f"iomt-gateway status: this was written {stale:.0f} s ago: the daemon is not running or is stuck "
            "(systemctl status iomt-gateway)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


def _outbox(config: Path | None, db: Path | None, as_json: bool, *, check: bool = False,
            ring: Path | None = None) -> int:
    from gateway.outbox import Outbox  # noqa: PLC0415

    if db is None:
        config = config or DEFAULT_CONFIG
        from gateway.config.loader import ConfigError, load_config_for_tools  # noqa: PLC0415
        from gateway.config.paths import resolve_paths  # noqa: PLC0415

        try:
            cfg = load_config_for_tools(config)
        except ConfigError as e:
            print_config_error("outbox", e)
            return EXIT_USAGE
        paths = resolve_paths(config, cfg)
        db, ring = paths.outbox, ring or paths.keyring
    from gateway.outbox import OutboxError  # noqa: PLC0415

    try:
        if not db.exists():
            print(f"iomt-gateway outbox: no outbox database at {db}", file=sys.stderr)
            return 1
        if check:
            from gateway.outbox_check_cli import check_command  # noqa: PLC0415

            return check_command(db, ring, as_json=as_json)
        stats = Outbox.inspect(db)
    except PermissionError:
        print(f"iomt-gateway outbox: cannot read {db}: run as the service's user (sudo -u iomt-gateway ...)",
              file=sys.stderr)  # fmt: skip
        return 1
    except OutboxError as e:
        print(f"iomt-gateway outbox: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"iomt-gateway outbox: cannot read {db}: {e.strerror or e}", file=sys.stderr)
        return 1
    if as_json:
        print(
            json.dumps(
                {
                    "classes": {k.value: vars(v) for k, v in stats.classes.items()},
                    "depth": stats.depth,
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
