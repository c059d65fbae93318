"""Alarm evidence strips: how many bytes a strip takes, and the outbox with strips flowing.

    uv run python bench/evidence_strips.py [--data ../shared/data] [--records 20000] [--every 50]

1. Bytes per strip: strips cut by ``gateway.evidence.EvidenceRecorder`` (default settings: 8 s
   before, 4 s after the raise) every 60 s through lead 0 of every record of vfdb (250 Hz) and
   mitdb (360 Hz); the encoded data and the whole record as JSON (what is published).
2. Outbox: ``accept`` of summaries alone, and of the same stream with one evidence strip every
   ``--every`` records, 10,000 submits in flight, each on a fresh sealed outbox (keyring on, as the
   daemon runs it): records/s and MB/s, median of ``--rounds`` runs alternating the two streams
   (the first run of a process pays warm-up; alternating spreads it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from outbox_throughput import make_summary, submit_windowed
from vf_data import load

from gateway import gc_tuning, keyring
from gateway.config.processing import EvidenceSection
from gateway.evidence import EvidenceRecorder, Strip
from gateway.outbox import Outbox
from gateway.records import ClockQuality, EvidenceRecord, SampleBlock

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
T0 = 1_780_000_000.0


def record_of(s: Strip, key: str) -> EvidenceRecord:
    t = datetime.fromtimestamp(s.start_time, tz=UTC)
    return EvidenceRecord(
        key=key, gateway_id="bench-gw", patient="p-bench", time=t, clock=ClockQuality.SYNCED,
        alarm_id=s.alarm_id, condition=s.condition, device=s.device, channel=s.channel, sample_rate_hz=s.fs,
        unit=s.unit, resolution=s.resolution, start_time=t, n_samples=s.n_samples, raise_index=s.raise_index,
        onset_index=s.onset_index, beats=s.beats, pace=s.pace, sample_format=s.sample_format, data=s.data,
    )  # fmt: skip


def strips_of(path: Path) -> list[Strip]:
    x, fs = load(path, 0)
    rec = EvidenceRecorder(EvidenceSection(max_bytes_per_hour=100_000_000))
    out: list[Strip] = []
    step = round(0.1 * fs)
    for start in range(0, len(x), step):
        t = T0 + start / fs
        block = SampleBlock("dev", "ecg", fs, t, x[start : start + step], "mV", first_index=start)
        if start > 0 and start % round(60 * fs) < step:
            rec.arm(f"{path.name}/{start}", "bench", "dev", None, t)
        out += rec.add_block(block)
    return out


async def accept_rate(folder: Path, n: int, strips: list[EvidenceRecord], every: int) -> tuple[float, float]:
    ring = keyring.init(folder / "keyring")[0]
    box = await Outbox.open(folder / f"o-{every}-{time.monotonic_ns()}.db", gateway_id="bench-gw", keyring=ring)
    records = []
    for i in range(n):
        if every and i % every == every - 1:
            records.append(strips[i // every % len(strips)].model_copy(update={"key": box.next_key()}))
        else:
            records.append(make_summary(box.next_key(), i))
    size = sum(len(r.model_dump_json()) for r in records)
    t0 = time.perf_counter()
    await submit_windowed(box, records, 10_000)
    dt = time.perf_counter() - t0
    await box.close()
    return n / dt, size / dt / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--every", type=int, default=50, help="one strip every this many records")
    ap.add_argument("--rounds", type=int, default=3, help="runs per stream (median)")
    args = ap.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    gc_tuning.configure()  # the daemon's collector settings (the freeze follows once the strips are cut)
    every_db: dict[str, list[EvidenceRecord]] = {}
    for db in ("vfdb", "mitdb"):
        paths = sorted(p.with_suffix("") for p in (args.data / db).glob("*.hea"))
        recs = [record_of(s, f"bench-gw:{i}") for p in paths for i, s in enumerate(strips_of(p))]
        data = np.asarray([len(r.data) for r in recs])
        whole = np.asarray([len(r.model_dump_json()) for r in recs])
        secs = recs[0].n_samples / recs[0].sample_rate_hz
        print(
            f"{db}: {len(recs)} strips of {secs:.0f} s at {recs[0].sample_rate_hz:g} Hz: data bytes median "
            f"{np.median(data):.0f}, max {data.max()}; whole record JSON median {np.median(whole):.0f}, max "
            f"{whole.max()} ({np.median(data) / recs[0].n_samples:.2f} bytes/sample)"
        )
        every_db[db] = recs
    strips = every_db["mitdb"]
    runs: dict[int, list[tuple[float, float]]] = {0: [], args.every: []}
    gc_tuning.freeze_startup_heap()
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for every, results in runs.items():
                results.append(asyncio.run(accept_rate(Path(tmp), args.records, strips, every)))
    base, base_mb = (statistics.median(x) for x in zip(*runs[0], strict=True))
    mixed, mixed_mb = (statistics.median(x) for x in zip(*runs[args.every], strict=True))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; sealed outbox, median of {args.rounds}")
    print(f"outbox accept, summaries only: {base:,.0f} records/s ({base_mb:.1f} MB/s)")
    print(
        f"outbox accept, one mitdb strip every {args.every} records: {mixed:,.0f} records/s ({mixed_mb:.1f} MB/s), "
        f"{mixed / args.every:,.0f} strips/s; ratio to summaries only {mixed / base:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
