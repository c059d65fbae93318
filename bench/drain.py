"""How fast does the uplink drain a backlog?  (target: 100,000 records in <= 60 s)

Fills a fresh SQLite outbox with N records (one alarm in ten, the rest summaries), starts a
private Mosquitto on a free loopback port, and times two ways of emptying it:

* ``uplink`` — ``gateway.uplink.Uplink`` (``--inflight`` publishes outstanding, batched acks);
* ``naive``  — lease one row, publish it with QoS 1, wait for the PUBACK, ack it, repeat.

The clock runs from the uplink's start until the outbox has acked every row, so connecting and
the final group commit are included.  Prints records/s for both and their ratio.  On loopback a
PUBACK takes well under a millisecond, which flatters the naive loop; ``--rtt-ms`` puts an
in-process delaying proxy between both clients and the broker to show a WAN link's effect.

    uv run python bench/drain.py                       # 100,000 records, naive on 5,000
    uv run python bench/drain.py --records 20000 --rtt-ms 40 --naive-records 200
    uv run python bench/drain.py --records 20000 --inflight 64 --verify
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import structlog

from gateway.config.models import UpstreamSection
from gateway.outbox import Outbox
from gateway.records import AlarmEvent, AlarmRecord, ClockQuality, Severity, SummaryRecord, Vital
from gateway.uplink import Uplink, topic_for
from tests.broker import MosquittoBroker, Subscriber, TcpProxy, find_mosquitto

GW = "bench-gw"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def make_record(outbox: Outbox, i: int, *, gateway_id: str = GW, when: datetime = T0,
                patients: int = 8) -> SummaryRecord | AlarmRecord:
    """Record ``i`` of a bench stream: one alarm in ten, summaries otherwise."""
    common = {"key": outbox.next_key(), "gateway_id": gateway_id, "patient": f"p{i % patients}", "time": when,
              "clock": ClockQuality.SYNCED}  # fmt: skip
    if i % 10 == 0:
        return AlarmRecord(**common, alarm_id=f"a{i}", event=AlarmEvent.RAISED, condition="spo2_low",
                           technical=False, severity=Severity.HIGH, vital=Vital.SPO2, value=85.0,
                           threshold=88.0)  # fmt: skip
    return SummaryRecord(**common, vital=Vital.HEART_RATE, unit="/min", period_start=when, period_end=when,
                         count=60, min=58.0, mean=71.5, max=93.0, quality=0.98, devices=["hr1"])  # fmt: skip


async def fill(path: Path, n: int) -> Outbox:
    outbox = await Outbox.open(path, gateway_id=GW, commit_max_records=5000)
    t = time.perf_counter()
    pending = []
    for i in range(n):
        pending.append(outbox.submit(make_record(outbox, i)))
        if len(pending) >= 5000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    print(f"  filled {n} records in {time.perf_counter() - t:.1f} s")
    return outbox


async def until_empty(outbox: Outbox) -> None:
    while outbox.stats().depth:  # noqa: ASYNC110 - the outbox publishes depth only as a snapshot
        await asyncio.sleep(0.01)


async def timed_uplink_drain(cfg: UpstreamSection, outbox: Outbox) -> tuple[float, Uplink]:
    """Seconds from the uplink's start until every row is acked; closes the outbox."""
    uplink = Uplink(cfg, outbox, gateway_id=GW)
    t = time.perf_counter()
    task = asyncio.create_task(uplink.run())
    try:
        await until_empty(outbox)
        elapsed = time.perf_counter() - t
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await outbox.close()
    return elapsed, uplink


async def drain_with_uplink(port: int, workdir: Path, n: int, inflight: int) -> float:
    outbox = await fill(workdir / "uplink.db", n)
    url = f"mqtt://127.0.0.1:{port}"
    cfg = UpstreamSection(url=url, topic_prefix="bench", inflight=inflight, publish_timeout_s=30.0)
    elapsed, uplink = await timed_uplink_drain(cfg, outbox)
    stats = uplink.stats
    print(f"  uplink stats: delivered={stats.delivered} resent={stats.resent} connects={stats.connects}"
          f" timeouts={stats.publish_timeouts}")  # fmt: skip
    if stats.delivered != n:
        raise SystemExit(f"uplink delivered {stats.delivered} of {n}")
    return elapsed


async def drain_naively(port: int, workdir: Path, n: int) -> float:
    outbox = await fill(workdir / "naive.db", n)
    t = time.perf_counter()
    async with aiomqtt.Client("127.0.0.1", port, identifier="naive",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:  # fmt: skip
        while rows := await outbox.lease(1):
            row = rows[0]
            await client.publish(topic_for("naive", GW, row.kind, row.patient), row.payload, qos=1)
            await outbox.ack([row.id])
        await until_empty(outbox)
    elapsed = time.perf_counter() - t
    await outbox.close()
    return elapsed


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--naive-records", type=int, default=5_000, help="the naive loop is slow; 0 skips it")
    ap.add_argument("--inflight", type=int, default=32, help="upstream.inflight (default: the config default)")
    ap.add_argument("--verify", action="store_true", help="also subscribe and check every key arrived once")
    ap.add_argument("--rtt-ms", type=float, default=0.0, help="emulated round trip to the broker (0: loopback)")
    args = ap.parse_args()

    # Per-ack debug lines would dominate the run.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if find_mosquitto() is None:
        print("mosquitto not found (apt-get install mosquitto)", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory() as tmp,
        MosquittoBroker(Path(tmp) / "broker", extra_config="set_tcp_nodelay true") as broker,
    ):
        work = Path(tmp)
        port = broker.port
        proxy = None
        if args.rtt_ms > 0:
            proxy = TcpProxy(broker.port, latency_s=args.rtt_ms / 2000)
            await proxy.start()
            port = proxy.port
        print(f"mosquitto on port {broker.port}; {args.records} records, inflight={args.inflight},"
              f" rtt={'loopback' if proxy is None else f'{args.rtt_ms:g} ms'}")  # fmt: skip
        sub = Subscriber("127.0.0.1", broker.port, topic="bench/#") if args.verify else None
        if sub is not None:
            await sub.__aenter__()
        elapsed = await drain_with_uplink(port, work, args.records, args.inflight)
        rate = args.records / elapsed
        verdict = "OK" if elapsed <= 60 else "SLOWER THAN TARGET"
        print(f"uplink: {args.records} records in {elapsed:.2f} s = {rate:,.0f} records/s  [{verdict}: <= 60 s]")
        if sub is not None:
            await sub.wait_until(lambda rs: len(sub.records()) >= args.records, within_s=120)
            keys = [r.user_properties["key"] for r in sub.records()]
            print(f"  verify: {len(keys)} received, {len(set(keys))} distinct keys")
            await sub.__aexit__(None, None, None)
        if args.naive_records > 0:
            naive_elapsed = await drain_naively(port, work, args.naive_records)
            naive_rate = args.naive_records / naive_elapsed
            print(f"naive:  {args.naive_records} records in {naive_elapsed:.2f} s = {naive_rate:,.0f} records/s")
            print(f"ratio uplink/naive: {rate / naive_rate:.1f}x")
        if proxy is not None:
            await proxy.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
