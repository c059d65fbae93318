"""The herd: N simulated hubs against one Mosquitto, through a broker restart.

Each hub is the gateway's own delivery path — a real SQLite outbox (its own file) and a real
``Uplink`` (its own client id, MQTT 5 persistent session, QoS 1) — fed by a producer making
summary records (one alarm in ten) at ``--rate`` records/s with random (Poisson) spacing; the
default 0.2/s is a hub with two patients and five vitals each at the default summary period of
a minute, plus their alarms.  Hubs
run ``--hubs-per-proc`` to a worker process (one event loop each; the workers report their
worst event-loop lag, so an overloaded worker shows instead of flattering the figures).

Timeline: start the broker and every hub; wait until all are connected and have been up long
enough to count as stable (``STABLE_AFTER_S``); stop Mosquitto (SIGTERM, persistence saved),
keep it down ``--down-s`` seconds while the hubs keep producing, start it again.  Measured:

* reconnections per second *at the broker* (its log's "New client connected" lines, whole
  seconds): the peak, and the spread (seconds from the first to the last hub back);
* ``all_back_s``: from the broker listening again to the last hub's CONNACK (hub side, ms);
* ``drained_s``: from the broker listening again until the subscriber has the whole backlog:
  every record not yet delivered when the broker stopped or accepted while its hub was away;
* lost records: every key a hub's outbox accepted (committed) must reach the subscriber by the
  end, after the producers stop and the outboxes empty.  Must be 0;
* CPU (all workers' user+system time over the run) and memory (workers' RSS above an idle
  worker's) per hub.

``--spread`` sets ``upstream.reconnect_spread_s`` (the first reconnect after a lost link waits
``uniform(0, spread)``; 0 gives the plain exponential schedule's first window of 1 s).
``--compare`` runs the herd twice, with spread 0 and with ``--spread``, and prints both.

    uv run python bench/fleet.py --hubs 200                  # spread 10 s (the default)
    uv run python bench/fleet.py --hubs 200 --compare        # 0 vs 10 s
    uv run python bench/fleet.py --hubs 400 --spread 20 --hubs-per-proc 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.drain import make_record  # noqa: E402
from gateway.config.models import UpstreamSection  # noqa: E402
from gateway.outbox import Outbox  # noqa: E402
from gateway.uplink import STABLE_AFTER_S, Uplink  # noqa: E402
from tests.broker import MosquittoBroker, Subscriber, find_mosquitto  # noqa: E402

PREFIX = "fleet"
REPORT_EVERY_S = 0.25


def hub_id(i: int) -> str:
    return f"hub-{i:04d}"


# ============================================================================================
# Worker process: a slice of the fleet in one event loop
# ============================================================================================


class _ConnectTimes:
    """A structlog processor that keeps each hub's CONNACK times (and drops every log line)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> Any:
        if event.get("event") == "uplink_connected":
            self.times.setdefault(event["gateway"], []).append(time.time())
        raise structlog.DropEvent


@dataclass
class _Hub:
    gw: str
    outbox: Outbox
    uplink: Uplink
    accepted: list[tuple[str, float]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def _produce(hub: _Hub, rate: float, rng: random.Random, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        await asyncio.sleep(rng.expovariate(rate))
        record = make_record(hub.outbox, n, gateway_id=hub.gw, when=datetime.now(UTC), patients=3)
        n += 1
        await hub.outbox.submit(record)  # committed: accepted
        hub.accepted.append((record.key, time.time()))


async def _lag_probe(lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(0.05)
        lags.append(loop.time() - t - 0.05)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def worker(args: argparse.Namespace) -> None:
    connects = _ConnectTimes()
    structlog.configure(processors=[connects], wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    baseline_rss = _rss_kb()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    cfg = UpstreamSection(url=args.url, topic_prefix=PREFIX, reconnect_spread_s=args.spread)
    hubs: list[_Hub] = []
    for i in range(args.first, args.first + args.count):
        gw = hub_id(i)
        outbox = await Outbox.open(Path(args.dir) / f"{gw}.db", gateway_id=gw)
        hubs.append(_Hub(gw, outbox, Uplink(cfg, outbox, gateway_id=gw, rng=random.Random(i))))
    stop = asyncio.Event()
    lags: list[float] = []
    probe = asyncio.create_task(_lag_probe(lags))
    for hub in hubs:
        rng = random.Random(10_000 + int(hub.gw[4:]))
        hub.tasks = [asyncio.create_task(hub.uplink.run()), asyncio.create_task(_produce(hub, args.rate, rng, stop))]

    async def report() -> None:
        while True:
            _emit({"status": [[h.uplink.stats.connected, h.outbox.stats().depth] for h in hubs]})
            await asyncio.sleep(REPORT_EVERY_S)

    reporter = asyncio.create_task(report())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (line := (await reader.readline()).decode().strip()) != "stop-producing":
        if not line:
            return  # the parent is gone
    stop.set()
    for hub in hubs:
        hub.tasks[1].cancel()
    await asyncio.gather(*(h.tasks[1] for h in hubs), return_exceptions=True)
    while (line := (await reader.readline()).decode().strip()) != "finish":
        if not line:
            return
    reporter.cancel()
    probe.cancel()
    for hub in hubs:
        hub.tasks[0].cancel()
    await asyncio.gather(*(h.tasks[0] for h in hubs), return_exceptions=True)
    for hub in hubs:
        await hub.outbox.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    lags.sort()
    _emit({
        "final": {
            "accepted": {h.gw: h.accepted for h in hubs},
            "connects": connects.times,
            "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            "rss_kb": _rss_kb(),
            "baseline_rss_kb": baseline_rss,
            "lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
            "lag_max_ms": 1000 * lags[-1] if lags else 0.0,
        }
    })  # fmt: skip


# ============================================================================================
# Coordinator
# ============================================================================================


class TimedSubscriber(Subscriber):
    """The tests' subscriber, also noting when each message arrived."""

    arrivals: list[float]

    def _keep(self, message: Any) -> None:
        super()._keep(message)
        self.arrivals.append(time.time())


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    hubs: int
    status: list[list[Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None

    async def pump(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            doc = json.loads(line)
            if "status" in doc:
                self.status = doc["status"]
            else:
                self.final = doc["final"]

    async def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())
        await self.proc.stdin.drain()


@dataclass
class Result:
    hubs: int
    spread: float
    records: int
    lost: int
    duplicates: int
    reconnect_peak_per_s: int
    reconnect_span_s: int
    per_second: list[int]
    all_back_s: float
    back_p50_s: float
    back_p90_s: float
    drained_s: float
    backlog: int
    cpu_pct_per_hub: float
    cpu_ms_per_record: float
    rss_kb_per_hub: float
    lag_p99_ms: float
    lag_max_ms: float


async def _until(predicate: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {within_s} s")
        await asyncio.sleep(0.05)


_CONNECT_LINE = re.compile(r"^(\d+): New client connected from \S+ as (hub-\d+)")


def _broker_connects(log: str) -> list[tuple[int, str]]:
    out = []
    for line in log.splitlines():
        m = _CONNECT_LINE.match(line)
        if m:
            out.append((int(m.group(1)), m.group(2)))
    return out


async def run_herd(args: argparse.Namespace, spread: float, work: Path) -> Result:
    broker = MosquittoBroker(work / "broker", extra_config="log_timestamp true\nmax_connections -1")
    broker.start()
    sub = TimedSubscriber("127.0.0.1", broker.port, topic=f"{PREFIX}/#", client_id="fleet-subscriber")
    sub.arrivals = []
    await sub.__aenter__()
    workers: list[Worker] = []
    pumps = []
    try:
        for first in range(0, args.hubs, args.hubs_per_proc):
            count = min(args.hubs_per_proc, args.hubs - first)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--worker", "--first", str(first), "--count", str(count),
                "--url", broker.url, "--spread", str(spread), "--rate", str(args.rate), "--dir", str(work),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            )  # fmt: skip
            w = Worker(proc, count)
            workers.append(w)
            pumps.append(asyncio.create_task(w.pump()))
        run_start = time.time()

        def connected() -> int:
            return sum(1 for w in workers for c, _ in w.status if c)

        await _until(lambda: connected() == args.hubs, 120, "every hub connected")
        print(f"  spread {spread:g} s: {args.hubs} hubs connected after {time.time() - run_start:.1f} s; "
              f"steady for {args.steady_s:g} s")  # fmt: skip
        await asyncio.sleep(args.steady_s)

        broker.stop()
        stopped_at = time.time()
        await asyncio.sleep(args.down_s)
        broker.start()
        up_at = time.time()
        await _until(lambda: connected() == args.hubs and time.time() - up_at > 1, 600, "every hub back")
        await asyncio.sleep(args.after_s)

        for w in workers:
            await w.tell("stop-producing")

        def depth() -> int:
            return sum(d for w in workers for _, d in w.status)

        await asyncio.sleep(2 * REPORT_EVERY_S)
        await _until(lambda: depth() == 0, 120, "outboxes empty")
        for w in workers:
            await w.tell("finish")
        await asyncio.wait_for(asyncio.gather(*pumps), 120)
        for w in workers:
            await w.proc.wait()
        run_s = time.time() - run_start
        accepted = {gw: keys for w in workers if w.final for gw, keys in w.final["accepted"].items()}
        all_keys = {k for keys in accepted.values() for k, _ in keys}
        await _until(lambda: all_keys <= {r.user_properties.get("key") for r in sub.records()}, 30, "records arrive")
    finally:
        await sub.__aexit__(None, None, None)
        for w in workers:
            if w.proc.returncode is None:
                w.proc.kill()
                await w.proc.wait()
        broker.kill()

    # ---- figures
    arrival: dict[str, float] = {}
    for r, t in zip(sub.received, sub.arrivals, strict=True):
        key = r.user_properties.get("key")
        if key is not None and key not in arrival:
            arrival[key] = t
    received_keys = [r.user_properties["key"] for r in sub.records()]
    lost = len(all_keys - arrival.keys())
    connects = {gw: ts for w in workers if w.final for gw, ts in w.final["connects"].items()}
    back = {gw: min(t for t in ts if t > stopped_at) for gw, ts in connects.items() if any(t > stopped_at for t in ts)}
    if len(back) != args.hubs:
        raise SystemExit(f"only {len(back)} of {args.hubs} hubs reconnected after the restart")
    delays = sorted(t - up_at for t in back.values())
    # The backlog: records still undelivered when the broker stopped or accepted while their hub was away.
    backlog = [k for gw, keys in accepted.items() for k, t in keys if t < back[gw] and arrival.get(k, 0) > stopped_at]
    drained_at = max((arrival[k] for k in backlog if k in arrival), default=up_at)
    at_broker = [t for t, gw in _broker_connects(broker.log_text()) if t >= math.floor(stopped_at)]
    per_second = [0] * (max(at_broker) - min(at_broker) + 1) if at_broker else []
    for t, n in Counter(at_broker).items():
        per_second[t - min(at_broker)] = n
    finals = [w.final for w in workers if w.final]
    cpu_s = sum(f["cpu_s"] for f in finals)
    records = len(all_keys)
    return Result(
        hubs=args.hubs,
        spread=spread,
        records=records,
        lost=lost,
        duplicates=len(received_keys) - len(set(received_keys)),
        reconnect_peak_per_s=max(per_second, default=0),
        reconnect_span_s=len(per_second),
        per_second=per_second,
        all_back_s=delays[-1],
        back_p50_s=statistics.median(delays),
        back_p90_s=delays[int(0.9 * (len(delays) - 1))],
        drained_s=drained_at - up_at,
        backlog=len(backlog),
        cpu_pct_per_hub=100 * cpu_s / run_s / args.hubs,
        cpu_ms_per_record=1000 * cpu_s / max(1, records),
        rss_kb_per_hub=sum(f["rss_kb"] - f["baseline_rss_kb"] for f in finals) / args.hubs,
        lag_p99_ms=max(f["lag_p99_ms"] for f in finals),
        lag_max_ms=max(f["lag_max_ms"] for f in finals),
    )


def describe(r: Result) -> str:
    return (
        f"  spread {r.spread:g} s: reconnections at the broker per second {r.per_second}\n"
        f"    peak {r.reconnect_peak_per_s}/s over {r.reconnect_span_s} s; hubs back (after the broker): "
        f"p50 {r.back_p50_s:.2f} s, p90 {r.back_p90_s:.2f} s, all {r.all_back_s:.2f} s\n"
        f"    backlog {r.backlog} records drained {r.drained_s:.2f} s after the broker was back; "
        f"{r.records} records, lost {r.lost}, resent copies {r.duplicates}\n"
        f"    per hub: CPU {r.cpu_pct_per_hub:.3f} % of a core ({r.cpu_ms_per_record:.2f} ms per record, all in), "
        f"RSS {r.rss_kb_per_hub / 1024:.2f} MB; worst event-loop lag p99 {r.lag_p99_ms:.0f} ms, "
        f"max {r.lag_max_ms:.0f} ms"
    )


def overall(r: Result) -> str:
    return (
        f"overall fleet: hubs={r.hubs} records={r.records} lost={r.lost} "
        f"reconnect_peak_per_s={r.reconnect_peak_per_s} all_back_s={r.all_back_s:.1f} drained_s={r.drained_s:.1f}"
    )


async def coordinator(args: argparse.Namespace) -> int:
    if find_mosquitto() is None:
        print("mosquitto not found (apt-get install mosquitto)", file=sys.stderr)
        return 2
    spreads = [0.0, args.spread] if args.compare else [args.spread]
    print(f"fleet: {args.hubs} hubs ({args.hubs_per_proc} per process), {args.rate:g} records/s each, "
          f"broker down {args.down_s:g} s; stable after {STABLE_AFTER_S:g} s up")  # fmt: skip
    results = []
    for spread in spreads:
        with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
            results.append(await run_herd(args, spread, Path(tmp)))
        print(describe(results[-1]))
    for r in results:
        print(f"  spread {r.spread:g} s -> " + overall(r).removeprefix("overall fleet: "))
    print(overall(results[-1]))
    return 1 if any(r.lost for r in results) else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hubs", type=int, default=200)
    ap.add_argument("--hubs-per-proc", type=int, default=50)
    ap.add_argument("--rate", type=float, default=0.2, help="records per second per hub (default 0.2)")
    ap.add_argument("--spread", type=float, default=UpstreamSection(url="mqtt://localhost").reconnect_spread_s,
                    help="upstream.reconnect_spread_s (default: the config default)")  # fmt: skip
    ap.add_argument("--compare", action="store_true", help="run with spread 0 first, then with --spread")
    ap.add_argument("--down-s", type=float, default=1.0, help="how long the broker stays down")
    ap.add_argument("--steady-s", type=float, default=STABLE_AFTER_S + 2, help="connected time before the restart")
    ap.add_argument("--after-s", type=float, default=3.0, help="producing time after every hub is back")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--url", default="", help=argparse.SUPPRESS)
    ap.add_argument("--dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    # paho reports each link the broker restart breaks ("failed to receive on socket") on the
    # "mqtt" logger; that is the event under study, counted above, not news.
    logging.getLogger("mqtt").setLevel(logging.CRITICAL)
    if args.worker:
        asyncio.run(worker(args))
        return 0
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(coordinator(args))


if __name__ == "__main__":
    sys.exit(main())
