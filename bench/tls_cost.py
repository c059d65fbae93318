"""What TLS and identifier scrubbing cost: uplink drain rate plain vs mutual TLS, connect time, log cost.

* drain: the same N records (one alarm in ten, the rest summaries) drained by ``gateway.uplink.Uplink``
  from a fresh outbox into a private Mosquitto, once over plain MQTT on loopback and once over mutual
  TLS through the shipped site template (config/mosquitto/: mTLS, identity as username, ACL), with a
  PKI made for the run (tests/pki.py).  Clock: from the uplink's start until every row is acked, so
  the TLS handshake is included.
* connect: median time of a full mTLS connect (TCP + handshake + MQTT CONNECT/CONNACK) vs plain.
* scrub: nanoseconds per log line added by ``gateway.logs.scrub_identifiers`` (device tags), on a
  typical line without an address and on one with a BLE address.

    uv run python bench/tls_cost.py                 # 20,000 records
    uv run python bench/tls_cost.py --records 50000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import structlog

from bench.drain import fill, timed_uplink_drain
from gateway import logs
from gateway.config.models import UpstreamSection
from tests.broker import MosquittoBroker, find_mosquitto, free_port, site_listener_config
from tests.pki import Pki

GW = "bench-gw"


async def drain(cfg: UpstreamSection, work: Path, name: str, n: int) -> float:
    elapsed, uplink = await timed_uplink_drain(cfg, await fill(work / f"{name}.db", n))
    if uplink.stats.delivered != n:
        raise SystemExit(f"{name}: delivered {uplink.stats.delivered} of {n} ({uplink.stats.last_error})")
    return elapsed


async def connect_times(port: int, ctx: ssl.SSLContext | None, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        t = time.perf_counter()
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=f"{GW}-{i}", protocol=aiomqtt.ProtocolVersion.V5, tls_context=ctx
        ):
            out.append(time.perf_counter() - t)
    return out


def scrub_cost(lines: int) -> tuple[float, float]:
    plain = {"event": "uplink_acked", "count": 32, "component": "uplink", "gateway": GW, "level": "debug"}
    with_addr = {"event": "device_retry", "error": "cannot connect to C4:7C:8D:6A:12:3F: org.bluez.Error.Failed",
                 "device": "hr-1", "level": "warning"}  # fmt: skip
    results = []
    for doc in (plain, with_addr):
        t = time.perf_counter()
        for _ in range(lines):
            logs.scrub_identifiers(None, "", dict(doc))
        base = time.perf_counter()
        for _ in range(lines):
            dict(doc)
        copy = time.perf_counter() - base
        results.append(((base - t) - copy) / lines * 1e9)
    return results[0], results[1]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--connects", type=int, default=30)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if find_mosquitto() is None:
        print("mosquitto not found (apt-get install mosquitto)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pki = Pki(work / "pki")
        tls_port = free_port()
        site = site_listener_config(pki, work / "site", tls_port)
        with (
            MosquittoBroker(work / "plain", extra_config="set_tcp_nodelay true") as plain,
            MosquittoBroker(work / "tls", port=tls_port, listener_config=site + "set_tcp_nodelay true\n") as tls,
        ):
            client = pki.client(GW)
            plain_cfg = UpstreamSection(url=plain.url, publish_timeout_s=30.0)
            tls_cfg = UpstreamSection(
                url=f"mqtts://127.0.0.1:{tls.port}", publish_timeout_s=30.0,
                ca_file=pki.site_ca.cert, cert_file=client.cert, key_file=client.key,
            )  # fmt: skip
            print(f"{args.records} records each way, inflight {plain_cfg.inflight}, loopback")
            t_plain = await drain(plain_cfg, work, "plain", args.records)
            t_tls = await drain(tls_cfg, work, "tls", args.records)
            print(f"drain plain mqtt:  {args.records / t_plain:10,.0f} records/s ({t_plain:.2f} s)")
            print(f"drain mutual TLS:  {args.records / t_tls:10,.0f} records/s ({t_tls:.2f} s)")
            print(f"TLS drain rate / plain: {t_plain / t_tls:.2f}")
            ctx = ssl.create_default_context(cafile=str(pki.site_ca.cert))
            ctx.load_cert_chain(str(client.cert), str(client.key))
            c_plain = await connect_times(plain.port, None, args.connects)
            c_tls = await connect_times(tls.port, ctx, args.connects)
            print(f"connect plain: median {statistics.median(c_plain) * 1000:.1f} ms; "
                  f"mutual TLS (P-256, TLS 1.3): median {statistics.median(c_tls) * 1000:.1f} ms "
                  f"over {args.connects} connects")  # fmt: skip
    plain_ns, addr_ns = scrub_cost(50_000)
    print(f"log scrub per line: {plain_ns:.0f} ns (no address), {addr_ns:.0f} ns (one BLE address)")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
