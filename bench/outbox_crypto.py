"""What sealing the outbox costs: AES-256-GCM at rest, the hash chain and signed checkpoints.

Prints, side by side (each run in a fresh child process, modes alternated, median of --rounds):

* accept — typed SummaryRecord built -> JSON -> sealed + chained -> committed (synchronous=FULL),
           10,000 submits in flight; records/s with the keyring ("on") and without ("off"),
           and on/off as a ratio (target: "on" stays >= 20,000 records/s);
* drain  — lease(500) + ack until empty: every row opened (decrypted) and given its chain member;
* checkpoint — microseconds to sign one checkpoint note (Ed25519) and to verify one, and how many
           the accept run signed (one per group commit that moved the chain);
* GC     — children run with the daemon's garbage-collector settings (gateway/gc_tuning.py: young
           threshold 5,000, start-up heap frozen); the "on" accept run is repeated with Python's
           defaults (700, nothing frozen) and printed beside it;
* RSS    — peak resident memory of each child (ru_maxrss) and the difference; and what importing
           the cryptography primitives costs on its own (the outbox imports them in both modes).

    uv run python bench/outbox_crypto.py
    uv run python bench/outbox_crypto.py --records 100000 --rounds 5 --dir /var/lib/iomt-gateway
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def _child(mode: str, folder: Path, n: int, gc_mode: str) -> dict[str, Any]:
    import structlog  # noqa: PLC0415

    from bench.outbox_throughput import BIG, accept_run  # noqa: PLC0415
    from gateway import gc_tuning, keyring  # noqa: PLC0415
    from gateway.outbox import Outbox  # noqa: PLC0415

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    ring = keyring.init(folder / "keyring")[0] if mode == "on" else None
    if gc_mode == "daemon":  # as gateway.daemon does: the threshold at start, the freeze once ready
        gc_tuning.configure()
    box = await Outbox.open(folder / "accept.db", gateway_id="bench-gw", quotas=BIG, keyring=ring)
    if gc_mode == "daemon":
        gc_tuning.freeze_startup_heap()
    accepted = await accept_run(box, n, 10_000)
    note = box.checkpoint()
    t0 = time.perf_counter()
    done = 0
    while rows := await box.lease(500):
        await box.ack([r.id for r in rows])
        done += len(rows)
    await box.close()
    drain_s = time.perf_counter() - t0
    assert done == n, (done, n)
    signed = int(note.split("\n")[1]) if note else 0
    return {"accept": accepted["rate"], "accept_cpu_us": accepted["cpu"] / n * 1e6, "drain": n / drain_s,
            "commits": accepted["commits"], "chain_size": signed,
            "rss_kb": _rss_kb()}


def _checkpoint_costs(count: int) -> tuple[float, float]:
    from gateway import chain, checkpoint, keyring  # noqa: PLC0415

    ring = keyring.generate(Path("/dev/null"))
    key, pub = ring.signing_key(), ring.public_key()
    origin = checkpoint.origin_for("bench-gw")
    head = chain.link(chain.GENESIS, b"{}")
    t0 = time.perf_counter()
    notes = [checkpoint.sign(origin, i + 1, head, key, origin, pub) for i in range(count)]
    sign_us = (time.perf_counter() - t0) / count * 1e6
    v = checkpoint.parse_verifier(checkpoint.verifier_key(origin, pub))
    t0 = time.perf_counter()
    for note in notes:
        checkpoint.open_note(note, v)
    return sign_us, (time.perf_counter() - t0) / count * 1e6


def _import_cost() -> int:
    # current RSS (VmRSS), not ru_maxrss: a child's peak starts at what its parent had before exec
    code = ("import re; rss = lambda: int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1]); "
            "a = rss(); "
            "from cryptography.hazmat.primitives.ciphers.aead import AESGCM; "
            "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey; "
            "AESGCM(bytes(32)).encrypt(bytes(12), b'x', None); Ed25519PrivateKey.generate().sign(b'x'); "
            "print(rss() - a)")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def _calibration_ms() -> float:
    """Best of 5 of a fixed pure-Python workload: says which speed the machine has now.

    A shared VM's speed moves (here by up to ~1.6x over hours, with no steal time shown), and
    records/s moves with it; this figure printed beside them tells a slow state from a regression."""
    import timeit  # noqa: PLC0415

    # CPU time, not wall time: other processes' load is printed apart (the load average)
    return min(timeit.repeat("sum(i * i for i in range(1_000_000))", number=1, repeat=5,
                             timer=time.process_time)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, help="folder for the databases (default: a temporary one)")
    ap.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--gc", choices=["daemon", "default"], default="daemon", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            print(json.dumps(asyncio.run(_child(args.child, Path(d), args.records, args.gc))))
        return
    calib = [_calibration_ms()]
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": [], "on-default-gc": []}
    for _ in range(args.rounds):
        for mode, results in runs.items():
            child, gc_mode = ("on", "default") if mode == "on-default-gc" else (mode, "daemon")
            cmd = [sys.executable, __file__, "--child", child, "--gc", gc_mode, "--records", str(args.records)]
            if args.dir:
                cmd += ["--dir", str(args.dir)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))

    def med(mode: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[mode])

    print(f"load average (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    calib.append(_calibration_ms())
    print(f"machine speed: a fixed Python workload took {calib[0]:.0f} ms of CPU before the runs, "
          f"{calib[1]:.0f} ms after (lower is faster)")
    print(f"outbox, {args.records:,} summaries, 10,000 in flight, median of {args.rounds} rounds per mode")
    print(f"{'':28}{'off':>12}{'on':>12}{'on/off':>9}")
    for field, label in (("accept", "accepted records/s"), ("drain", "drained records/s (lease+ack)")):
        off, on = med("off", field), med("on", field)
        print(f"{label:28}{off:>12,.0f}{on:>12,.0f}{on / off:>9.2f}")
    off, on = med("off", "accept_cpu_us"), med("on", "accept_cpu_us")
    print(f"{'accept CPU per record (us)':28}{off:>12.1f}{on:>12.1f}{on / off:>9.2f}   (both threads; steadier "
          "than records/s on a loaded machine)")
    dflt, dflt_cpu = med("on-default-gc", "accept"), med("on-default-gc", "accept_cpu_us")
    print(f"{'on, Python default GC':28}{'':>12}{dflt:>12,.0f}{'':>9}   accepted records/s, "
          f"{dflt_cpu:.1f} us CPU per record (daemon GC settings: {med('on', 'accept') / dflt:.2f}x the rate)")
    rss_off, rss_on = med("off", "rss_kb"), med("on", "rss_kb")
    added = (rss_on - rss_off) / 1024
    print(f"{'peak RSS (MB)':28}{rss_off / 1024:>12.1f}{rss_on / 1024:>12.1f}   added {added:+.1f} MB")
    commits = med("on", "commits")
    print(f"checkpoints signed in an 'on' accept run: {commits:.0f} group commits, chain size "
          f"{med('on', 'chain_size'):,.0f}")
    sign_us, verify_us = _checkpoint_costs(2_000)
    print(f"cost per checkpoint: sign {sign_us:.0f} us, verify {verify_us:.0f} us "
          f"(at 5 commits/s: {sign_us * 5 / 1e4:.3f} % of one core)")
    print(f"importing + first use of AESGCM and Ed25519 on their own: {_import_cost() / 1024:+.1f} MB RSS "
          "(paid in both modes: the outbox imports them)")


if __name__ == "__main__":
    main()
