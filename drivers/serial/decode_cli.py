"""``iomt-gateway decode PROTOCOL [FILE|-]``: decode a raw serial capture with the daemon's own decoder.

Prints one JSON object per line: readings (``"kind": "vital" | "samples" | "event"``) and
dropped-bytes reports (``"kind": "dropped"`` with the byte offset in the capture), then a summary
on stderr.  Times are seconds from the start of the capture, counted in frame periods (a capture
file has no reception times).  ``--frames`` prints the decoded frames themselves (status bytes and
all) instead of readings: the view a technician wants when a device "sends nothing useful".

Capture a port with e.g. ``stty -F /dev/ttyUSB0 9600 raw && cat /dev/ttyUSB0 > capture.bin``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from drivers.serial.framing import Dropped
from drivers.serial.protocols import PROTOCOLS
from gateway.readings import ClockQuality, Reading, SampleBlock, VitalReading

CHUNK = 4096


def reading_json(r: Reading, waveform: bool = True) -> dict[str, Any]:
    if isinstance(r, VitalReading):
        return {
            "kind": "vital",
            "t": round(r.time, 4),
            "vital": r.vital.value,
            "value": r.value,
            "unit": r.unit,
            "flags": sorted(f.value for f in r.flags),
        }
    if isinstance(r, SampleBlock):
        obj: dict[str, Any] = {
            "kind": "samples",
            "t": round(r.first_sample_time, 4),
            "channel": r.channel,
            "rate_hz": r.sample_rate_hz,
            "unit": r.unit,
            "first_index": r.first_index,
            "n": len(r.samples),
            "gap_before": r.gap_before,
            "flags": sorted(f.value for f in r.flags),
        }
        if r.pace:
            obj["pace"] = list(r.pace)
        if waveform:
            obj["samples"] = [round(float(x), 3) for x in r.samples]
        return obj
    return {"kind": "event", "t": round(r.time, 4), "state": r.state.value, "detail": r.detail}


def dropped_json(d: Dropped) -> dict[str, Any]:
    return {"kind": "dropped", "offset": d.offset, "count": d.count, "reason": d.reason}


def _frame_json(item: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": "frame", "type": type(item).__name__}
    for f in dataclasses.fields(item):
        v = getattr(item, f.name)
        if hasattr(v, "tolist"):
            v = v.tolist()
        elif isinstance(v, frozenset | set):
            v = sorted(str(x) for x in v)
        elif isinstance(v, dict):
            v = {str(k): x for k, x in v.items()}
        obj[f.name] = v
    return obj


def decode_stream(
    protocol: str, stream: IO[bytes], frames: bool = False, waveform: bool = True
) -> Iterator[dict[str, Any]]:
    """JSON-ready objects for everything decoded from ``stream``, in stream order."""
    info = PROTOCOLS[protocol]
    decoder = info.make_decoder()
    translator = info.make_translator("capture")
    t = 0.0

    def emit(items: list[Any]) -> Iterator[dict[str, Any]]:
        nonlocal t
        for it in items:
            if isinstance(it, Dropped):
                yield dropped_json(it)
                continue
            t += translator.duration(it)
            if frames:
                yield _frame_json(it)
                continue
            for r in translator.translate([it], t, ClockQuality.DEVICE):
                yield reading_json(r, waveform)

    while chunk := stream.read(CHUNK):
        yield from emit(decoder.feed(chunk))
    yield from emit(decoder.finish())
    if not frames:
        for r in translator.flush():
            yield reading_json(r, waveform)


def run(protocol: str, argv: list[str]) -> int:
    prog = f"iomt-gateway decode {protocol}"
    ap = argparse.ArgumentParser(
        prog=prog,
        description=f"Decode a raw {protocol} capture into JSON lines (one reading per line, summary on stderr).",
        epilog=f"examples:\n  {prog} capture.bin\n  {prog} - < capture.bin\n\n"
        "capture a port with: stty -F /dev/ttyUSB0 9600 raw && timeout 10 cat /dev/ttyUSB0 > capture.bin",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("file", nargs="?", default="-", help="capture file, or - for standard input (default)")
    ap.add_argument("--frames", action="store_true", help="print decoded frames instead of readings")
    ap.add_argument("--no-waveform", action="store_true", help="omit the sample values of waveform blocks")
    args = ap.parse_args(argv)
    out = sys.stdout
    counts: dict[str, int] = {}
    dropped = 0
    if args.file == "-" and sys.stdin.isatty():
        # Waiting silently for bytes typed on a keyboard looks like a hang.
        print(f"{prog}: no capture given: name a FILE, or pipe one in ({prog} - < capture.bin)", file=sys.stderr)
        return 2
    try:
        src: IO[bytes] = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as e:
        print(f"{prog}: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    with src:
        for obj in decode_stream(protocol, src, frames=args.frames, waveform=not args.no_waveform):
            counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
            if obj["kind"] == "dropped":
                dropped += obj["count"]
            out.write(json.dumps(obj) + "\n")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing decoded"
    print(f"{protocol}: {summary}; {dropped} bytes dropped", file=sys.stderr)
    return 0


def _entry(protocol: str) -> Callable[[list[str]], int]:
    def main(argv: list[str]) -> int:
        return run(protocol, argv)

    main.__name__ = protocol
    main.__doc__ = f"iomt-gateway decode {protocol} [FILE|-]"
    return main


nonin2 = _entry("nonin2")
nonin7 = _entry("nonin7")
nonin8 = _entry("nonin8")
masimo = _entry("masimo")
contec = _entry("contec")
ecgstream = _entry("ecgstream")

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in PROTOCOLS:
        print(f"usage: python -m drivers.serial.decode_cli {{{','.join(PROTOCOLS)}}} [FILE|-]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(sys.argv[1], sys.argv[2:]))
