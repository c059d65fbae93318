"""iomt-gateway verify --key PUB FILE: audit a capture of a gateway's published messages.

FILE (- for stdin) holds either

* JSON lines: {"topic": "...", "payload": "..."} per message (payload_b64 also accepted),
  or a bare record object per line; or
* mosquitto_sub -F '%t\\t%p' -t '<prefix>/<gateway>/#' output: topic, a tab, the payload.
  A checkpoint's payload spans several lines (it is a signed note); they are read up to its last
  signature line.

PUB is the verifier key from iomt-gateway keys export (or a file holding it; --key may be given
more than once, for a capture spanning a signing-key rotation).  Exit status 0
when the capture is consistent, 1 on any violation, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from pathlib import Path

from gateway import checkpoint
from gateway.verify import verify


class CaptureError(ValueError):
    pass


def parse_capture(text: str) -> list[tuple[str, bytes]]:
    lines = text.split("\n")
    out: list[tuple[str, bytes]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if line.startswith("{"):
            out.append(_json_line(line, i))
            continue
        topic, tab, payload = line.partition("\t")
        if not tab:
            raise CaptureError(f"line {i}: neither JSON nor 'topic<TAB>payload'")
        if topic.endswith("/checkpoint"):
            note = [payload]
            signed = False
            while i < len(lines):
                nxt = lines[i]
                if nxt.startswith(f"{checkpoint.DASH} "):
                    signed = True
                elif signed:
                    break
                note.append(nxt)
                i += 1
            out.append((topic, ("\n".join(note) + "\n").encode()))
            continue
        out.append((topic, payload.encode()))
    return out


def _json_line(line: str, n: int) -> tuple[str, bytes]:
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise CaptureError(f"line {n}: invalid JSON: {e}") from None
    if isinstance(obj, dict) and "topic" in obj and ("payload" in obj or "payload_b64" in obj):
        if "payload_b64" in obj:
            try:
                return str(obj["topic"]), base64.b64decode(obj["payload_b64"], validate=True)
            except (binascii.Error, ValueError, TypeError) as e:
                raise CaptureError(f"line {n}: bad payload_b64") from e
        return str(obj["topic"]), str(obj["payload"]).encode()
    return "", line.encode()  # a bare record, exactly as published


def verify_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="iomt-gateway verify", description=__doc__,
                                 epilog="example:\n  mosquitto_sub -F '%t\\t%p' -t 'iomt/hub-0042/#' > capture.tsv\n"
                                 "  iomt-gateway verify --key hub.pub capture.tsv",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--key", required=True, action="append",
                    help="verifier key, or a file holding one per line; repeat it for a capture "
                         "that spans a signing-key rotation (a checkpoint signed by any of them counts)")
    ap.add_argument("file", help="capture file, or - for stdin")
    ap.add_argument("--json", action="store_true", help="machine-readable report")
    args = ap.parse_args(argv)
    try:
        verifiers = [checkpoint.parse_verifier(k) for arg in args.key for k in _key_lines(arg)]
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        messages = parse_capture(text)
    except (checkpoint.BadVerifierKey, CaptureError, OSError, UnicodeDecodeError) as e:
        print(f"iomt-gateway verify: {e}", file=sys.stderr)
        return 2
    report = verify(messages, verifiers)
    if args.json:
        print(json.dumps({**vars(report), "ok": report.ok}))
    else:
        print(report.render())
    return 0 if report.ok else 1


def _key_lines(arg: str) -> list[str]:
    text = Path(arg).read_text() if Path(arg).is_file() else arg
    return [line.strip() for line in text.splitlines() if line.strip()]
