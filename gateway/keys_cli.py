"""iomt-gateway keys init|rotate|status|export: the keyring on the command line.

    iomt-gateway keys init   [-c CONFIG | --keyring PATH]   create once; never overwrites (exit 0 if present)
    iomt-gateway keys rotate [-c CONFIG | --keyring PATH]   new AEAD key for new writes; old ones kept
    iomt-gateway keys rotate-signing [-c CONFIG | --keyring PATH] [--grace-days N]
                                                           new checkpoint signing key; the previous one
                                                           co-signs for N days (default 30; 0 if it may
                                                           be compromised) while receivers enrol the new
    iomt-gateway keys prune  [-c CONFIG | --keyring PATH]   drop the previous signing key once its
                                                           co-signing time is over (rotate-signing)
    iomt-gateway keys status [-c CONFIG | --keyring PATH]   where it is, key ids, what the outbox uses
    iomt-gateway keys export [-c CONFIG | --keyring PATH --gateway-id ID]
                                                           the checkpoint verifier key (signed-note format)

Without -c or --keyring the path is the systemd credential if present, else
/etc/iomt-gateway/keyring.  No secret is ever printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import checkpoint, keyring


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="iomt-gateway keys", description=__doc__,
                                 epilog="example:\n  iomt-gateway keys init -c /etc/iomt-gateway/config.yaml\n"
                                 "  iomt-gateway keys export -c /etc/iomt-gateway/config.yaml > hub.pub",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["init", "rotate", "rotate-signing", "prune", "status", "export"])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("-c", "--config", type=Path, help="config file (storage.keyring, gateway.id, the outbox)")
    src.add_argument("--keyring", type=Path, help="keyring file")
    ap.add_argument("--gateway-id", help="gateway id for `export` without a config")
    ap.add_argument("--grace-days", type=float, default=30.0,
                    help="rotate-signing: days the previous key keeps co-signing (default 30)")
    return ap


def _config(path: Path) -> Any:
    from gateway.config.loader import load_config_for_tools  # noqa: PLC0415

    return load_config_for_tools(path)


def keys_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    cfg: Any = None
    outbox: Path | None = None
    if args.config is not None:
        from gateway.config.errors import ConfigError  # noqa: PLC0415
        from gateway.config.paths import resolve_paths  # noqa: PLC0415

        try:
            cfg = _config(args.config)
        except ConfigError as e:
            print(e.render(), file=sys.stderr)
            return 2
        paths = resolve_paths(args.config, cfg)
        path, outbox = paths.keyring, paths.outbox
    else:
        path = args.keyring or keyring.resolve(None)
    try:
        if args.action == "init":
            ring, created = keyring.init(path)
            print(f"{'created' if created else 'exists, left unchanged:'} {path} (key ids {sorted(ring.aead)})")
            return 0
        if args.action == "rotate":
            ring = keyring.rotate(path)
            print(f"rotated {path}: new writes use key id {ring.current}; key ids {sorted(ring.aead)} kept")
            return 0
        if args.action == "rotate-signing":
            if args.grace_days < 0:
                print("iomt-gateway keys: --grace-days must be 0 or more", file=sys.stderr)
                return 2
            ring = keyring.rotate_signing(path, args.grace_days * 86_400.0, time.time())
            until = ("not at all (grace 0)" if ring.previous_signing is None else
                     "until " + datetime.fromtimestamp(ring.previous_signing[1], tz=UTC).isoformat(timespec="seconds"))
            print(f"rotated the signing key in {path}; the previous key co-signs checkpoints {until}.\n"
                  "Restart the service, then give every receiver the new verifier key "
                  "(`iomt-gateway keys export`).")
            return 0
        if args.action == "prune":
            ring, dropped = keyring.prune_signing(path, time.time())
            if dropped:
                print(f"dropped the previous signing key from {path}; restart the service so it stops co-signing.")
            elif ring.previous_signing is not None:
                until = datetime.fromtimestamp(ring.previous_signing[1], tz=UTC).isoformat(timespec="seconds")
                print(f"the previous signing key co-signs until {until}: kept; run this again after that.")
            else:
                print(f"no previous signing key in {path}: nothing to drop.")
            return 0
        ring = keyring.load(path)
    except (keyring.KeyringError, OSError) as e:
        print(f"iomt-gateway keys: {e}", file=sys.stderr)
        return 1
    gateway_id = cfg.gateway.id if cfg is not None else args.gateway_id
    if args.action == "export":
        if not gateway_id:
            print("iomt-gateway keys: export needs -c CONFIG or --gateway-id", file=sys.stderr)
            return 2
        print(checkpoint.verifier_key(checkpoint.origin_for(gateway_id), ring.public_key()))
        return 0
    info: dict[str, Any] = {
        "keyring": str(path),
        "source": "systemd credential" if keyring.credential_path() == path else "file",
        "key_ids": sorted(ring.aead),
        "current": ring.current,
        "permissions_loose": keyring.loose_permissions(path),
    }
    if gateway_id:
        origin = checkpoint.origin_for(gateway_id)
        info["verifier_key"] = checkpoint.verifier_key(origin, ring.public_key())
        if (previous := ring.cosigning_key()) is not None:
            old_key, cosigns_until = previous
            info["previous_verifier_key"] = checkpoint.verifier_key(origin, old_key.public_key().public_bytes_raw())
            info["previous_cosigns_until"] = datetime.fromtimestamp(cosigns_until, tz=UTC).isoformat(timespec="seconds")
    if ring.previous_signing is not None and ring.previous_signing[1] <= time.time():
        info["hint"] = "the previous signing key's co-signing time is over: `iomt-gateway keys prune` drops it"
    if outbox is not None and outbox.exists():
        info["outbox"] = str(outbox)
        info["outbox_key_ids"] = _outbox_kids(outbox)
    print(json.dumps(info, indent=1))
    return 0


def _outbox_kids(db: Path) -> list[int] | str:
    from gateway.outbox import Outbox, OutboxError  # noqa: PLC0415

    try:
        return Outbox.key_ids(db)
    except OutboxError as e:
        return f"unreadable: {e}"
