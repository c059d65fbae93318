"""How fast is the durable outbox, and how gentle on an SD card?  (prints figures; not a test)

Measures, on a fresh SQLite file with ``synchronous=FULL``:

* accept      — typed ``SummaryRecord`` built -> JSON -> committed, many submits in flight
                (target >= 20,000 records/s on one core);
* steady      — commits/s at a steady 500 records/s (target <= 5: one group commit per 200 ms);
* drain       — lease(500) + ack until empty, including the final commit of the acks;
* raw sqlite3 — executemany of the same payloads at 100 rows/commit and at 1 row/commit,
                same schema and pragmas, as the yardstick the ratios are against;
* cost split  — microseconds per record for building the model and for ``model_dump_json``.

    uv run python bench/outbox_throughput.py
    uv run python bench/outbox_throughput.py --records 100000 --dir /var/lib/iomt-gateway
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sqlite3
import tempfile
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from gateway import gc_tuning
from gateway.config.models import QuotaSection
from gateway.outbox import Outbox, Record
from gateway.outbox.schema import MIGRATIONS
from gateway.records import ClockQuality, SummaryRecord, Vital

GW = "bench-gw"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
PERIOD = timedelta(minutes=1)


def make_summary(key: str, i: int) -> SummaryRecord:
    start = T0 + i * PERIOD
    return SummaryRecord(
        key=key, gateway_id=GW, patient=f"p{i % 8}", time=start + PERIOD, clock=ClockQuality.SYNCED,
        vital=Vital.HEART_RATE, unit="/min", period_start=start, period_end=start + PERIOD, count=60,
        rejected=1, min=55.0 + i % 7, mean=61.5, max=80.0, quality=0.97, devices=["ox1"],
    )


BIG = QuotaSection(summary=10_000_000, alarm=10_000_000, billing=10_000_000, status=10_000_000)


async def open_box(folder: Path, name: str) -> Outbox:
    return await Outbox.open(folder / name, gateway_id=GW, quotas=BIG)


async def submit_windowed(box: Outbox, records: Iterable[Record], window: int) -> None:
    """Submit every record with at most ``window`` not yet committed; return once all are."""
    outstanding: deque[asyncio.Future[None]] = deque()
    for r in records:
        outstanding.append(box.submit(r))
        if len(outstanding) >= window:
            await outstanding.popleft()
    await asyncio.gather(*outstanding)


async def accept_run(box: Outbox, n: int, window: int) -> dict[str, float]:
    """Submit ``n`` records with at most ``window`` of them not yet committed (a sliding window:
    the producer waits for the oldest, as a daemon's producers never wait for a whole batch);
    time to the last commit."""
    c0 = box.stats().commits
    cpu0, t0, loop0 = time.process_time(), time.perf_counter(), time.thread_time()
    await submit_windowed(box, (make_summary(box.next_key(), i) for i in range(n)), window)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    loop_cpu = time.thread_time() - loop0  # this thread runs the event loop: build, JSON, futures
    return {"rate": n / wall, "wall": wall, "cpu": cpu, "loop_cpu": loop_cpu, "commits": box.stats().commits - c0}


async def bench_accept(folder: Path, n: int, window: int) -> dict[str, float]:
    box = await open_box(folder, "accept.db")
    out = await accept_run(box, n, window)
    await box.close()
    return out


async def bench_steady(folder: Path, rate: int, seconds: float) -> dict[str, float]:
    box = await open_box(folder, "steady.db")
    tick = 0.01
    per_tick = rate * tick
    t0 = time.perf_counter()
    # Commit rate from the commits themselves: (time, count) whenever the count moves, after the
    # first second (the very first record of a run commits at once).  Counting commits in a fixed
    # window instead would be off by one commit per window (fence posts).
    seen: list[tuple[float, int]] = []
    sent = 0
    futs: list[asyncio.Future[None]] = []
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    w0 = written_bytes()

    def timed(fut: asyncio.Future[None], started: float) -> None:
        fut.add_done_callback(lambda _f: latencies.append(loop.time() - started))

    while (elapsed := time.perf_counter() - t0) < seconds:
        commits = box.stats().commits
        if elapsed >= 1.0 and (not seen or seen[-1][1] != commits):
            seen.append((time.perf_counter(), commits))
        due = int(elapsed / tick * per_tick) + int(per_tick)
        while sent < due:
            f = box.submit(make_summary(box.next_key(), sent))
            timed(f, loop.time())
            futs.append(f)
            sent += 1
        await asyncio.sleep(tick)
    # seen[0] may sit anywhere between two commits: measure from the first change on
    (t_first, n_first), (t_last, n_last) = seen[1], seen[-1]
    commits_per_s = (n_last - n_first) / (t_last - t_first)
    await asyncio.gather(*futs)
    wall = time.perf_counter() - t0
    w1 = written_bytes()
    await box.close()
    latencies.sort()
    return {
        "offered": sent / wall,
        "commits_per_s": commits_per_s,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "bytes_per_record": (w1 - w0) / sent if w0 is not None and w1 is not None else float("nan"),
    }


async def bench_drain(folder: Path, n: int, batch: int) -> dict[str, float]:
    box = await open_box(folder, "drain.db")
    futs = [box.submit(make_summary(box.next_key(), i)) for i in range(n)]
    await asyncio.gather(*futs)
    t0 = time.perf_counter()
    done = 0
    while rows := await box.lease(batch):
        await box.ack([r.id for r in rows])
        done += len(rows)
    await box.close()  # the last acks are committed here: part of the drain
    wall = time.perf_counter() - t0
    assert done == n, (done, n)
    assert Outbox.inspect(folder / "drain.db").depth == 0
    return {"rate": n / wall, "wall": wall}


def written_bytes() -> int | None:
    """Bytes this process has sent toward storage (Linux /proc/self/io), for the SD-wear figure."""
    try:
        with open("/proc/self/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
        return int(fields["wchar"])  # write() syscalls: what SQLite hands the kernel
    except (OSError, KeyError, ValueError):
        return None


def bench_raw(folder: Path, payloads: list[tuple[str, bytes]], per_commit: int) -> float:
    """The same rows through plain sqlite3: WAL, synchronous=FULL, our schema, one executemany a commit."""
    path = folder / f"raw{per_commit}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    MIGRATIONS[1](conn)
    now = time.time()
    t0 = time.perf_counter()
    for i in range(0, len(payloads), per_commit):
        chunk = payloads[i : i + per_commit]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO outbox(kind, key, patient, seq, created, payload) VALUES ('summary', ?, 'p1', ?, ?, ?)",
            [(k, i + j, now, p) for j, (k, p) in enumerate(chunk)],
        )
        conn.execute("COMMIT")
    wall = time.perf_counter() - t0
    conn.close()
    return len(payloads) / wall


def cost_split(n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    recs = [make_summary(f"{GW}:{i}", i) for i in range(n)]
    t1 = time.perf_counter()
    for r in recs:
        r.model_dump_json().encode()
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50_000, help="records for accept/drain (default 50,000)")
    ap.add_argument("--windows", type=int, nargs="+", default=[1_000, 10_000, 0],
                    help="submits in flight in the accept runs (0: all at once)")
    ap.add_argument("--steady-rate", type=int, default=500)
    ap.add_argument("--steady-seconds", type=float, default=6.0)
    ap.add_argument("--raw-single", type=int, default=1_000, help="rows for the 1 row/commit run")
    ap.add_argument("--dir", type=Path, help="folder for the databases (default: a temporary one)")
    ap.add_argument("--python-gc", action="store_true",
                    help="Python's default garbage-collector settings (default: the daemon's, gateway/gc_tuning.py)")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not args.python_gc:  # what the daemon process runs with
        gc_tuning.configure()
        gc_tuning.freeze_startup_heap()

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        folder = Path(d)
        build_us, json_us = cost_split(20_000)
        accs = {}
        for w in args.windows:
            accs[w] = await bench_accept(folder, args.records, w or args.records)
            (folder / "accept.db").unlink()
        steady = await bench_steady(folder, args.steady_rate, args.steady_seconds)
        drain = await bench_drain(folder, args.records, 500)
        (folder / "drain.db").unlink()
        drain32 = await bench_drain(folder, args.records, 32)
        payloads = [(f"{GW}:{i}", make_summary(f"{GW}:{i}", i).model_dump_json().encode())
                    for i in range(args.records)]
        raw100 = bench_raw(folder, payloads, 100)
        raw1 = bench_raw(folder, payloads[: args.raw_single], 1)

    whose_gc = "Python's defaults" if args.python_gc else "the daemon's"
    print(f"outbox benchmark: {args.records:,} SummaryRecords, synchronous=FULL, folder {args.dir or 'tmp'}, "
          f"GC thresholds {gc.get_threshold()} ({whose_gc})")
    print(f"{'measure':<54}{'value':>12}  {'vs raw 100/commit':>18}{'vs raw 1/commit':>16}")
    print("-" * 102)

    def row(name: str, value: str, rate: float | None = None) -> None:
        ratios = f"{rate / raw100:>17.2f}x{rate / raw1:>15.1f}x" if rate else ""
        print(f"{name:<54}{value:>12}  {ratios}")

    for w, acc in accs.items():
        inflight = f"{w:,}" if w else "all"
        row(f"accept (build+JSON+commit) rec/s, {inflight} in flight", f"{acc['rate']:,.0f}", acc["rate"])
        row("  CPU us/record: loop thread / writer thread",
            f"{acc['loop_cpu'] / args.records * 1e6:.0f} / {(acc['cpu'] - acc['loop_cpu']) / args.records * 1e6:.0f}")
        row("  group commits for the run", f"{acc['commits']:,.0f}")
    row("steady load offered rec/s", f"{steady['offered']:,.0f}")
    row("  commits/s at that load (target <= 5)", f"{steady['commits_per_s']:.2f}")
    row("  accept latency p50 / p99 ms", f"{steady['p50_ms']:.0f} / {steady['p99_ms']:.0f}")
    row("  bytes written per record (WAL + checkpoints)", f"{steady['bytes_per_record']:,.0f}")
    row("drain lease(500)+ack rec/s", f"{drain['rate']:,.0f}", drain["rate"])
    row("drain lease(32)+ack rec/s (the uplink's batch size)", f"{drain32['rate']:,.0f}", drain32["rate"])
    row("raw sqlite3 executemany 100 rows/commit r/s", f"{raw100:,.0f}", raw100)
    row(f"raw sqlite3 1 row/commit r/s ({args.raw_single:,} rows)", f"{raw1:,.0f}", raw1)
    row("build SummaryRecord us/record", f"{build_us:.1f}")
    row("model_dump_json us/record", f"{json_us:.1f}")
    print("-" * 102)
    print("A producer that waits with fewer than commit_max_records (2,000) submits in flight is paced by\n"
          "the group commit: at most that many records per commit_interval (200 ms).  JSON is built on the\n"
          "loop thread; under the GIL moving it to the writer thread would only move its cost.")


if __name__ == "__main__":
    asyncio.run(main())
